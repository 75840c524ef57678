/* mamlc-mpi: mamlc whose meta-batches are shared among the processes of an
 * MPI job (docs/distributed.md):
 *   mpirun -np P mamlc-mpi run FILE.mdl [mamlc run's options]
 * Every process compiles the model and draws the same initial parameters;
 * at each iteration it computes the node sums of its share of the tasks
 * (runtime/batch.c), one MPI_Allgatherv hands every process all of them,
 * and each sums them along the same tree and applies the same update, so
 * the parameters are the same bits as with one process.  Only rank 0
 * prints, evaluates and writes files.  A process that fails aborts the job,
 * so none waits forever for it. */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>

#include "run.h"

typedef struct {
    MPI_Datatype vector;        /* one node vector; MPI_DATATYPE_NULL until the first call */
} Gather;

/* RtGatherFn over MPI_COMM_WORLD; MPI's default error handler aborts the
 * job on failure. */
static bool gather(void *ctx, const double *send, int nsend, double *recv, const int *counts,
                   const int *displs, size_t unit) {
    Gather *g = ctx;
    if (g->vector == MPI_DATATYPE_NULL &&
        (unit > INT_MAX || MPI_Type_contiguous((int)unit, MPI_DOUBLE, &g->vector) != MPI_SUCCESS ||
         MPI_Type_commit(&g->vector) != MPI_SUCCESS))
        return false;
    return MPI_Allgatherv(send, nsend, g->vector, recv, counts, displs, g->vector, MPI_COMM_WORLD) ==
           MPI_SUCCESS;
}

int main(int argc, char **argv) {
    int provided, rank, size;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "mamlc-mpi: error: MPI_Init failed\n");
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank > 0 && !freopen("/dev/null", "w", stdout))
        fprintf(stderr, "mamlc-mpi: warning: rank %d writes its standard output too\n", rank);
    Gather g = {MPI_DATATYPE_NULL};
    RunCluster cluster = {rank, size, gather, &g};
    int status = mamlc_main(argc, argv, &cluster);
    if (g.vector != MPI_DATATYPE_NULL)
        MPI_Type_free(&g.vector);
    if (status != 0 && size > 1) {
        fprintf(stderr, "mamlc-mpi: rank %d failed (exit status %d): stopping the job\n", rank, status);
        fflush(stdout);
        MPI_Abort(MPI_COMM_WORLD, status);
    }
    MPI_Finalize();
    return status;
}
