// Prints the mount namespace id (NS_GET_MNTNS_ID) of this process and of
// children that unshare(CLONE_NEWNS) on CPU 0 and CPU 1 in turn: on kernels
// that hand ids out in per-CPU batches they are not in creation order
// (docs/sandboxes.md). Build: gcc -o mntns-ids mntns-ids.c; run as root.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#define NSIO 0xb7
#define NS_GET_MNTNS_ID _IOR(NSIO, 0x5, uint64_t)
static uint64_t id(const char *p){int fd=open(p,O_RDONLY);uint64_t v=0;if(ioctl(fd,NS_GET_MNTNS_ID,&v)<0)perror("ioctl");close(fd);return v;}
int main(){
  printf("self %llu\n",(unsigned long long)id("/proc/self/ns/mnt"));
  fflush(stdout); /* before fork: a piped stdout is buffered */
  for(int i=0;i<8;i++){
    int cpu=i%2;
    pid_t p=fork();
    if(p==0){cpu_set_t s;CPU_ZERO(&s);CPU_SET(cpu,&s);sched_setaffinity(0,sizeof s,&s);unshare(CLONE_NEWNS);printf("cpu%d child %llu\n",cpu,(unsigned long long)id("/proc/self/ns/mnt"));fflush(stdout);_exit(0);}
    waitpid(p,0,0);
  }
}
