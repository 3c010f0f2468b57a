/* A stand-in app's ELF entry point (see ../README.md): initializes the stand-in environment
 * library from build/lib, as an SPDK app initializes env_dpdk, then runs the app's logic
 * (src/NAME.py, at IMPL relative to this executable) in its place; built with SUPERVISE, as a
 * child whose exit status QPAIR_WITHOUT_POLL_GROUP makes this process fail SPDK's assertion in
 * nvme_rdma_qpair_destroy, so the abort, its message and its core are the ELF app's own. */
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/standin.h"

#define QPAIR_WITHOUT_POLL_GROUP 99

#ifdef SUPERVISE
/* Signals meant for the app reach the child too (tbctl signals the whole tree): wait for it. */
static int supervise(char **args)
{
	struct standin_qpair qpair = { NULL };
	int status;
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		execv("/usr/bin/python3", args);
		perror("execv /usr/bin/python3");
		_exit(127);
	}
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	while (waitpid(pid, &status, 0) < 0) {
	}
	if (WIFSIGNALED(status)) {
		return 128 + WTERMSIG(status);
	}
	if (WEXITSTATUS(status) == QPAIR_WITHOUT_POLL_GROUP) {
		nvme_rdma_qpair_destroy(&qpair);
	}
	return WEXITSTATUS(status);
}
#endif

int main(int argc, char **argv)
{
	char exe[PATH_MAX], impl[PATH_MAX * 2];
	char **args;
	ssize_t n;
	int i;

	if (standin_env_init() != 0) {
		return 1;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0) {
		perror("readlink /proc/self/exe");
		return 1;
	}
	exe[n] = '\0';
	snprintf(impl, sizeof(impl), "%s/%s", dirname(exe), IMPL);
	args = calloc(argc + 2, sizeof(*args));
	if (args == NULL) {
		return 1;
	}
	args[0] = "python3";
	args[1] = impl;
	for (i = 1; i < argc; i++) {
		args[i + 1] = argv[i];
	}
#ifdef SUPERVISE
	return supervise(args);
#else
	execv("/usr/bin/python3", args);
	perror("execv /usr/bin/python3");
	return 127;
#endif
}
