/* The pod sandbox's process (the real node's pause image, hack/realnode/images.py):
   it holds the pod's namespaces, reaps orphans, and exits on SIGINT or SIGTERM. */
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
static void quit(int s) { (void)s; _exit(0); }
int main(void) {
  signal(SIGINT, quit); signal(SIGTERM, quit); signal(SIGCHLD, reap);
  for (;;) pause();
}
