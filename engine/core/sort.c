#include "sort.h"

#include <string.h>

/* Bottom-up merge sort: no recursion (so no stack depth to bound) and the
 * "take from the left run on ties" rule makes it stable. */
void mc_sort_u32(uint32_t *items, size_t n, uint32_t *scratch, mc_sort_cmp cmp, const void *ctx)
{
    if (n < 2)
        return;
    uint32_t *src = items;
    uint32_t *dst = scratch;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (cmp(ctx, src[j], src[i]) < 0)
                    dst[k++] = src[j++];
                else
                    dst[k++] = src[i++];
            }
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != items)
        memcpy(items, src, n * sizeof *items);
}
