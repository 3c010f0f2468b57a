/* The one piece of SPDK's lib/nvme/nvme_rdma.c the stand-in perf needs: destroying a qpair that
 * lost its poll group fails the assertion SPDK #3569 reported (see ../README.md). */
#include <assert.h>
#include <stddef.h>

#include "standin.h"

__attribute__((noinline)) void nvme_rdma_qpair_destroy(struct standin_qpair *qpair)
{
	assert(qpair->poll_group);
	qpair->poll_group = NULL;
}
