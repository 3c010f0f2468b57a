/* A stand-in app's ELF entry point (see ../README.md): initializes the stand-in environment
 * library from build/lib, as an SPDK app initializes env_dpdk, then runs the app's logic
 * (src/NAME.py, at IMPL relative to this executable) in its place. */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int standin_env_init(void);

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
	execv("/usr/bin/python3", args);
	perror("execv /usr/bin/python3");
	return 127;
}
