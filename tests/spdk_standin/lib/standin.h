/* What the stand-in apps' ELF front end (app/main.c) shares with its pieces of SPDK's logic. */
#ifndef STANDIN_H
#define STANDIN_H

struct standin_qpair {
	void *poll_group;
};

int standin_env_init(void);
void nvme_rdma_qpair_destroy(struct standin_qpair *qpair);

#endif
