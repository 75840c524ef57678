/* Checkpoints of meta-training in the safetensors format
 * (github.com/huggingface/safetensors), so Python reads them with
 * safetensors.numpy.load_file:
 *
 *   u64 (little-endian) N | N bytes of JSON header | data
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets"}
 * (byte offsets into the data, which the tensors tile exactly) and holds
 * string metadata under "__metadata__".  A mamlc checkpoint stores:
 *   - each meta-learned tensor under its own name, row-major, little-endian;
 *   - with state, the outer optimiser's state (rt_opt_state_count reals, in
 *     the order rt_opt_step keeps them) as the tensor "__state__" of shape
 *     [nstate], and the metadata "iteration": meta-iterations done;
 *   - the metadata "format": RT_CHECKPOINT_FORMAT and, when the caller gives
 *     one, "model": a fingerprint of the model.
 * Writing follows the reference implementation byte for byte: tensors
 * sorted by name, data in that order, compact JSON padded with spaces to a
 * multiple of 8 bytes. */
#ifndef MAMLC_CHECKPOINT_H
#define MAMLC_CHECKPOINT_H

#include "runtime.h"

#define RT_CHECKPOINT_FORMAT "mamlc-checkpoint-1"
#define RT_CHECKPOINT_STATE "__state__"     /* tensor name of the optimiser state */
#define RT_CHECKPOINT_MAX_HEADER 100000000  /* bytes of JSON header, as the reference */

/* The shape of one tensor. */
typedef struct {
    int rank;                   /* 0 for a scalar */
    const int *dim;             /* rank extents, row-major, each >= 0 */
} RtShape;

/* What a checkpoint holds, and where: the model's tensors are slices of one
 * flat vector (as in RtProgram), the state another. */
typedef struct {
    RtReal real;                /* element type of params and state */
    int nparam;
    const RtParam *param;       /* unique names, neither "__metadata__" nor "__state__" */
    const RtShape *shape;       /* shape[i] of param[i]; its element count is param[i].count */
    size_t nreal;               /* length of params; every slice lies inside it */
    void *params;               /* save: read from; load: written to */
    const char *model;          /* fingerprint, or NULL: saved as "model"; on load a
                                   file's fingerprint must equal it when both exist */
    bool has_state;             /* save: store state and iteration; load: require them */
    size_t nstate;              /* length of state */
    void *state;                /* save: read from; load: written to */
    long iteration;             /* meta-iterations done (>= 0): save: stored; load: set */
} RtCheckpoint;

/* Write c to path atomically: to a new file beside it, synced, renamed over
 * path, and the folder synced, so path is at every moment either the old
 * file or the whole new one.  On failure nothing is left behind, path is
 * untouched, and err says why (naming the file). */
bool rt_checkpoint_save(const char *path, const RtCheckpoint *c, char *err, size_t errsize);

/* Read the checkpoint at path into c->params (and, when c->has_state, into
 * c->state and c->iteration).  The layout in c is what the file must hold:
 * the same tensors by name, no more and no fewer (a "__state__" the caller
 * did not ask for is ignored), with c->real's dtype and the same shapes; and
 * a state of exactly nstate reals when asked for.  The whole file is checked
 * (header length and JSON, exact tiling of the data, its length, the format
 * and fingerprint) before anything is written to c; a file that fails a
 * check is refused with a message in err that names it and what is wrong. */
bool rt_checkpoint_load(const char *path, RtCheckpoint *c, char *err, size_t errsize);

enum { RT_FINGERPRINT_SIZE = 25 };     /* "fnv1a64:" + 16 hex digits + NUL */

/* A fingerprint of the layout of c (element type, and each tensor's name
 * and shape, in order) and of `extra` (NULL for none: e.g. the printed IR
 * of the model, to tell apart models with equal layouts), for c->model. */
void rt_checkpoint_fingerprint(const RtCheckpoint *c, const char *extra,
                               char out[RT_FINGERPRINT_SIZE]);

#endif
