#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec*1e-9;}
#define N (1<<20)
#define IT 300
int main(void){
  int fd = memfd_create("t", MFD_CLOEXEC); ftruncate(fd, 8<<20);
  char *sh = mmap(NULL, N, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0); memset(sh, 1, N);
  static char dst[N]; memset(dst,0,N);
  volatile long s=0; double t;
  t=now(); for(int i=0;i<IT;i++){ memcpy(dst, sh, N); s+=dst[i]; } printf("memcpy 1 MiB warm:                        %7.1f us\n",(now()-t)/IT*1e6);
  t=now(); for(int i=0;i<IT;i++){ char*p=mmap(NULL,N,PROT_READ|PROT_WRITE,MAP_PRIVATE,fd,0); madvise(p,N,MADV_POPULATE_READ); s+=p[i]; munmap(p,N);} printf("mmap private+POPULATE_READ+munmap 1 MiB:  %7.1f us\n",(now()-t)/IT*1e6);
  t=now(); for(int i=0;i<IT;i++){ char*p=mmap(NULL,N,PROT_READ|PROT_WRITE,MAP_PRIVATE,fd,0); for(int k=0;k<N;k+=4096) s+=p[k]; munmap(p,N);} printf("mmap private+touch-read+munmap 1 MiB:     %7.1f us\n",(now()-t)/IT*1e6);
  char *pp=mmap(NULL,N,PROT_READ|PROT_WRITE,MAP_PRIVATE,fd,0);
  t=now(); for(int i=0;i<IT;i++){ madvise(pp,N,MADV_DONTNEED); madvise(pp,N,MADV_POPULATE_READ); s+=pp[i]; } printf("persistent: DONTNEED+POPULATE_READ 1 MiB: %7.1f us\n",(now()-t)/IT*1e6);
  t=now(); for(int i=0;i<IT;i++){ char*f=mmap(sh,N,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_FIXED,fd,0); s+=f[0]; mmap(sh,N,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_FIXED,fd,0); madvise(sh,N,MADV_POPULATE_WRITE); } printf("owner cycle freeze+reshare+POPULATE_WRITE: %7.1f us\n",(now()-t)/IT*1e6);
  t=now(); for(int i=0;i<IT;i++){ char*p=mmap(NULL,N,PROT_READ|PROT_WRITE,MAP_PRIVATE,fd,0); for(int k=0;k<N;k+=4096) p[k]=2; munmap(p,N);} printf("COW every page of 1 MiB (map+write+unmap): %7.1f us\n",(now()-t)/IT*1e6);
  t=now(); for(int i=0;i<IT;i++){ fallocate(fd,FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE,0,N); memset(sh,1,N);} printf("punch hole + refault-write 1 MiB (fresh):  %7.1f us\n",(now()-t)/IT*1e6);
  return 0;
}
