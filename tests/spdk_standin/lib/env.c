/* The stand-in's environment library: what SPDK's env_dpdk does before an app runs, for real,
 * so the stand-in fails where a real tree fails (see ../README.md).
 *
 * - OpenSSL loads its configuration file, as spdk_env_init does since v24.01;
 * - free 2 MiB hugepages must exist, as DPDK's EAL requires;
 * - libfuse3 and libnuma are linked and called, as a static SPDK build links them.
 */
#define _GNU_SOURCE /* as SPDK builds every file: on glibc >= 2.38 strtol is then __isoc23_strtol */
#define FUSE_USE_VERSION 31
#include <fuse3/fuse.h>
#include <numa.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

#define FREE_HUGEPAGES "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

static int openssl_init(void)
{
	OPENSSL_INIT_SETTINGS *settings = OPENSSL_INIT_new();
	int rc;

	if (settings == NULL) {
		return -1;
	}
	OPENSSL_INIT_set_config_file_flags(settings, 0);
	rc = OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, settings);
	OPENSSL_INIT_free(settings);
	if (rc != 1) {
		fprintf(stderr, "Failed to initialize OpenSSL\n");
		ERR_print_errors_fp(stderr);
		return -1;
	}
	return 0;
}

static int hugepages_init(void)
{
	FILE *f = fopen(FREE_HUGEPAGES, "r");
	char buf[32] = "";
	long free_pages = 0;

	if (f != NULL) {
		if (fgets(buf, sizeof(buf), f) != NULL) {
			free_pages = strtol(buf, NULL, 10);
		}
		fclose(f);
	}
	if (free_pages <= 0) {
		fprintf(stderr, "EAL: No free 2048 kB hugepages reported on node 0\n");
		fprintf(stderr, "EAL: FATAL: Cannot get hugepage information.\n");
		fprintf(stderr, "EAL: Cannot get hugepage information.\n");
		fprintf(stderr, "Failed to initialize DPDK\n");
		return -1;
	}
	return 0;
}

int standin_env_init(void)
{
	/* Called for their side effect on linking: a static SPDK app needs both libraries. */
	if (fuse_version() < 30 || numa_available() < -1) {
		return -1;
	}
	if (openssl_init() != 0 || hugepages_init() != 0) {
		fprintf(stderr, "Unable to initialize SPDK env\n");
		return -1;
	}
	return 0;
}
