/* The test cluster's sandbox ("pause") image: holds the pod's namespaces, reaps zombies, exits
 * on SIGTERM/SIGINT. Built statically (gcc -static) into a one-file image by image.ts, because
 * the lab cannot pull registry.k8s.io/pause. With "sleep N" as arguments it sleeps N seconds
 * and exits, and "echo WORDS" prints them: enough for the smoke test's workload pods. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term (int sig) { (void)sig; stop = 1; }
static void on_child (int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main (int argc, char **argv) {
  struct sigaction term = { .sa_handler = on_term };
  struct sigaction child = { .sa_handler = on_child, .sa_flags = SA_NOCLDSTOP };
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGINT, &term, NULL);
  sigaction(SIGCHLD, &child, NULL);
  int i = 1;
  if (argc > 1 && strcmp(argv[1], "echo") == 0) {
    for (i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) printf("%s%s", i > 2 ? " " : "", argv[i]);
    printf("\n");
    fflush(stdout);
    if (i >= argc) return 0;
    i++;
  }
  if (i < argc && strcmp(argv[i], "sleep") == 0 && i + 1 < argc) {
    unsigned left = (unsigned)strtoul(argv[i + 1], NULL, 10);
    while (!stop && left > 0) left = sleep(left);
    return 0;
  }
  while (!stop) pause();
  return 0;
}
