/* Common-subexpression elimination: rebuild the body through the
 * hash-consing constructor, so equal nodes (same op, operands, attributes
 * and type) become one value. */
#include "passes.h"

bool pass_cse(IrFunc *f) { return pass_rebuild(f, NULL, NULL, NULL, true); }
