/* x^c for a constant c, shared by the CPU and NVPTX targets (powc.h). */
#include "powc.h"

#include <math.h>
#include <string.h>

/* The intrinsic `name` of x's type applied to x, in b's module. */
static LLVMValueRef intrinsic1(LLVMBuilderRef b, const char *name, LLVMValueRef x)
{
    LLVMTypeRef t = LLVMTypeOf(x);
    LLVMModuleRef mod = LLVMGetGlobalParent(LLVMGetBasicBlockParent(LLVMGetInsertBlock(b)));
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(mod, id, &t, 1);
    return LLVMBuildCall2(b, LLVMIntrinsicGetType(LLVMGetTypeContext(t), id, &t, 1), fn, &x, 1, "");
}

/* x^k for k >= 1 by repeated squaring. */
static LLVMValueRef ipow(LLVMBuilderRef b, LLVMValueRef x, int k)
{
    LLVMValueRef y = NULL, p = x;
    while (k) {
        if (k & 1)
            y = y ? LLVMBuildFMul(b, y, p, "") : p;
        k >>= 1;
        if (k)
            p = LLVMBuildFMul(b, p, p, "");
    }
    return y;
}

LLVMValueRef be_build_powc(LLVMBuilderRef b, LLVMTypeRef t, LLVMValueRef x, double c, BePow pow, void *target)
{
    LLVMValueRef one = LLVMConstReal(t, 1);
    double a = fabs(c);
    int k = (int)floor(a);
    if (a == k && a <= 16) {
        if (k == 0)
            return one;
        LLVMValueRef y = ipow(b, x, k);
        return c < 0 ? LLVMBuildFDiv(b, one, y, "") : y;
    }
    if (a != k + 0.5 || a > 16.5)
        return pow(target, x, c);
    LLVMTypeRef w = k > 0 && LLVMGetTypeKind(t) == LLVMFloatTypeKind ? LLVMDoubleTypeInContext(LLVMGetTypeContext(t))
                                                                      : t;
    LLVMValueRef xw = w != t ? LLVMBuildFPExt(b, x, w, "") : x;
    LLVMValueRef y = LLVMBuildFAdd(b, intrinsic1(b, "llvm.sqrt", xw), LLVMConstReal(w, 0), "");
    if (k > 0)
        y = LLVMBuildFMul(b, ipow(b, intrinsic1(b, "llvm.fabs", xw), k), y, "");
    y = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOEQ, xw, LLVMConstReal(w, -INFINITY), ""),
                        LLVMConstReal(w, INFINITY), y, "");
    if (c < 0)
        y = LLVMBuildFDiv(b, LLVMConstReal(w, 1), y, "");
    return w != t ? LLVMBuildFPTrunc(b, y, t, "") : y;
}
