#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#define PG 4096
static long rss(const char *key){ FILE*f=fopen("/proc/self/status","r"); char l[256]; long v=-1; while(fgets(l,sizeof l,f)) if(!strncmp(l,key,strlen(key))) v=atol(l+strlen(key)+1); fclose(f); return v;}
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
int main(void){
  size_t n = 16*PG;
  int fd = memfd_create("t", MFD_CLOEXEC|MFD_ALLOW_SEALING);
  ftruncate(fd, 64<<20);
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK|F_SEAL_GROW);
  char *sh = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0);
  memset(sh, 'a', n);
  char *pv = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0);
  printf("1. private before: %c\n", pv[0]);
  sh[0]='b'; printf("1. private after shared write to untouched page: %c (MAP_PRIVATE is not a snapshot)\n", pv[0]);
  pv[PG]='p'; sh[PG+1]='c'; printf("1. after private wrote page 1, shared write to page 1 seen by private? %s\n", pv[PG+1]=='c'?"yes":"no");
  munmap(pv,n);
  /* 2. freeze: sender remaps its own range private in place */
  char *rcv = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0);
  char *frozen = mmap(sh, n, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED, fd, 0);
  printf("2. remap in place: same address %d, content kept %c%c\n", frozen==sh, frozen[0], frozen[PG+1]);
  frozen[0]='S'; printf("2. sender wrote S; receiver sees %c; ", rcv[0]);
  char *probe = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
  printf("file has %c\n", probe[0]);
  rcv[2*PG]='R'; printf("2. receiver wrote R; sender sees %c, file %c\n", frozen[2*PG], probe[2*PG]);
  /* 3. read-only reopen */
  char path[64]; snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int ro = open(path, O_RDONLY|O_CLOEXEC);
  void *m = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_SHARED, ro, 0);
  printf("3. ro fd: MAP_SHARED|PROT_WRITE -> %s\n", m==MAP_FAILED?strerror(errno):"ok");
  m = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_PRIVATE, ro, 0);
  printf("3. ro fd: MAP_PRIVATE|PROT_WRITE -> %s\n", m==MAP_FAILED?strerror(errno):"ok");
  printf("3. ro fd: pwrite -> %s\n", pwrite(ro,"x",1,0)<0?strerror(errno):"ok");
  printf("3. ro fd: fallocate punch -> %s\n", fallocate(ro,FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,0,PG)<0?strerror(errno):"ok");
  void *m2 = mmap(NULL, n, PROT_READ, MAP_SHARED, ro, 0);
  printf("3. ro fd: MAP_SHARED|PROT_READ then mprotect(WRITE) -> %s\n", mprotect(m2,n,PROT_READ|PROT_WRITE)<0?strerror(errno):"ok");
  /* 5. punch hole under a private view */
  char *view = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
  char before = view[3*PG];
  printf("5. punch hole with SHRINK|GROW seals -> %s; ", fallocate(fd,FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,3*PG,PG)<0?strerror(errno):"ok");
  printf("private view of that page before %c after %d (0 = zeroed)\n", before, view[3*PG]);
  printf("5. receiver's COWed page after punch of page 2: %c\n", (fallocate(fd,FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,2*PG,PG), rcv[2*PG]));
  /* 4. seals */
  int fd2 = memfd_create("s", MFD_CLOEXEC|MFD_ALLOW_SEALING); ftruncate(fd2, n);
  char *w = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_SHARED, fd2, 0); w[0]='x';
  printf("4. F_SEAL_WRITE with a shared writable mapping -> %s\n", fcntl(fd2,F_ADD_SEALS,F_SEAL_WRITE)<0?strerror(errno):"ok");
  printf("4. F_SEAL_FUTURE_WRITE -> %s\n", fcntl(fd2,F_ADD_SEALS,F_SEAL_FUTURE_WRITE)<0?strerror(errno):"ok");
  char *p2 = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd2, 0);
  printf("4. after FUTURE_WRITE: new MAP_PRIVATE|PROT_WRITE -> %s; ", p2==MAP_FAILED?strerror(errno):"ok");
  m = mmap(NULL, n, PROT_READ|PROT_WRITE, MAP_SHARED, fd2, 0);
  printf("new MAP_SHARED|PROT_WRITE -> %s; ", m==MAP_FAILED?strerror(errno):"ok");
  w[0]='y'; printf("old shared mapping still writes, private sees %c\n", p2!=MAP_FAILED?p2[0]:'?');
  if (p2!=MAP_FAILED){ p2[0]='z'; printf("4. private write after FUTURE_WRITE ok: %c\n", p2[0]); }
  /* 6. populate costs */
  size_t big = 32<<20;
  char *s = mmap(NULL, big, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0); memset(s, 1, big);
  long a0 = rss("RssAnon:");
  char *q = mmap(NULL, big, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_POPULATE, fd, 0);
  printf("6. MAP_PRIVATE|MAP_POPULATE (writable) of 32 MiB: RssAnon +%ld kB\n", rss("RssAnon:")-a0);
  munmap(q,big); a0 = rss("RssAnon:");
  double t=now(); q = mmap(NULL, big, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0);
  int r = madvise(q, big, MADV_POPULATE_READ); double t1=now()-t;
  printf("6. MAP_PRIVATE + MADV_POPULATE_READ: rc %d, RssAnon +%ld kB, %.2f ms\n", r, rss("RssAnon:")-a0, t1*1e3);
  munmap(q,big); q = mmap(NULL, big, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0);
  t=now(); volatile long sum=0; for(size_t i=0;i<big;i+=PG) sum+=q[i]; printf("6. read-fault 32 MiB private (fault-around): %.2f ms\n",(now()-t)*1e3);
  t=now(); for(size_t i=0;i<big;i+=PG) q[i]=2; printf("6. first write to each page of 32 MiB private (COW): %.2f ms\n",(now()-t)*1e3);
  t=now(); memset(q,3,big); printf("6. memset 32 MiB warm private: %.2f ms\n",(now()-t)*1e3);
  t=now(); char *frz = mmap(s, big, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED, fd, 0); printf("6. freeze (MAP_FIXED private) 32 MiB: %.3f ms\n",(now()-t)*1e3);
  t=now(); for(size_t i=0;i<big;i+=PG) sum+=frz[i]; printf("6. sender read after freeze (refault): %.2f ms\n",(now()-t)*1e3);
  a0=rss("RssAnon:"); for(size_t i=0;i<big;i+=PG) frz[i]=4; long a1=rss("RssAnon:");
  madvise(frz, big, MADV_DONTNEED); printf("6. COWed +%ld kB anon; MADV_DONTNEED on private -> RssAnon back by %ld kB, value now %d (file)\n", a1-a0, a1-rss("RssAnon:"), frz[0]);
  return 0;
}
