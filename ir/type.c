#include "ir.h"

#include <string.h>

IrType ir_type(DType dt, int rank, const int *dim) {
    IrType t = {.dtype = dt, .rank = rank};
    for (int i = 0; i < rank; i++)
        t.dim[i] = dim[i];
    return t;
}

IrType ir_scalar(DType dt) { return (IrType){.dtype = dt}; }

int64_t ir_numel(IrType t) {
    int64_t n = 1;
    for (int i = 0; i < t.rank; i++)
        n *= t.dim[i];
    return n;
}

bool ir_same_shape(IrType a, IrType b) {
    if (a.rank != b.rank)
        return false;
    for (int i = 0; i < a.rank; i++)
        if (a.dim[i] != b.dim[i])
            return false;
    return true;
}

bool ir_type_eq(IrType a, IrType b) { return a.dtype == b.dtype && ir_same_shape(a, b); }

const char *ir_dtype_name(DType dt) {
    switch (dt) {
    case DT_F32: return "f32";
    case DT_F64: return "f64";
    case DT_I32: return "i32";
    }
    return "?";
}

size_t ir_dtype_size(DType dt) { return dt == DT_F64 ? 8 : 4; }

char *ir_type_str(IrType t, char *buf, size_t size) {
    size_t n = (size_t)snprintf(buf, size, "%s[", ir_dtype_name(t.dtype));
    for (int i = 0; i < t.rank && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ",%d" : "%d", t.dim[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
    return buf;
}
