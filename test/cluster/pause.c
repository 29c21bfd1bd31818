/* The test cluster's sandbox ("pause") image: holds the pod's namespaces, reaps zombies, exits
 * on SIGTERM/SIGINT. Built statically (gcc -static) into a one-file image by image.ts, because
 * the lab cannot pull registry.k8s.io/pause. Arguments make it a minimal workload (the smoke
 * test's): "echo WORDS --" prints, "write FILE WORDS --" writes a file, "sleep N" exits after N
 * seconds; after the commands it waits for SIGTERM like the sandbox does. */
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
  /* commands, each ended by "--" or the end: echo WORDS | write FILE WORDS | sleep N (then exit) */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "sleep") == 0 && i + 1 < argc) {
      unsigned left = (unsigned)strtoul(argv[i + 1], NULL, 10);
      while (!stop && left > 0) left = sleep(left);
      return 0;
    }
    FILE *out = stdout;
    if (strcmp(argv[i], "write") == 0 && i + 1 < argc) {
      out = fopen(argv[++i], "w");
      if (out == NULL) { perror(argv[i]); return 1; }
    } else if (strcmp(argv[i], "echo") != 0) {
      fprintf(stderr, "pause: unknown command %s\n", argv[i]);
      return 2;
    }
    int first = 1;
    for (i++; i < argc && strcmp(argv[i], "--") != 0; i++, first = 0) fprintf(out, "%s%s", first ? "" : " ", argv[i]);
    fprintf(out, "\n");
    if (out != stdout) fclose(out); else fflush(stdout);
  }
  while (!stop) pause();
  return 0;
}
