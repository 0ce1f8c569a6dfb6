#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static void show(const char *what, int pm, char *p, int pages){
  uint64_t e[8]; pread(pm, e, pages*8, (uintptr_t)p/4096*8);
  printf("%-34s", what);
  for(int i=0;i<pages;i++) printf(" [present=%d file/shared=%d excl=%d]", (int)(e[i]>>63&1), (int)(e[i]>>61&1), (int)(e[i]>>56&1));
  printf("\n");
}
int main(void){
  int pm = open("/proc/self/pagemap", O_RDONLY);
  int fd = memfd_create("t", 0); ftruncate(fd, 3*4096);
  char *s = mmap(NULL, 3*4096, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0); memset(s, 1, 3*4096);
  show("shared, written:", pm, s, 3);
  char *p = mmap(NULL, 3*4096, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0);
  volatile char c = p[0]; (void)c; c = p[4096]; p[4096*2] = 5;
  show("private: read,read,written(COW):", pm, p, 3);
  madvise(p+8192, 4096, MADV_DONTNEED);
  show("after DONTNEED of page 2:", pm, p, 3);
  return 0;
}
