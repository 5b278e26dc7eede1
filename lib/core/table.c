#include "core/table.h"

#include <string.h>

size_t mc_table_find_id(const void *records, size_t stride, size_t id_offset, const uint32_t *index,
                        size_t n, const char *id, bool *found)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t r = index != NULL ? index[mid] : mid;
        int c = strcmp((const char *)records + r * stride + id_offset, id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

void mc_table_open(void *arr, size_t elem, size_t count, size_t pos)
{
    char *p = (char *)arr + pos * elem;
    memmove(p + elem, p, (count - pos) * elem);
}

void mc_table_close(void *arr, size_t elem, size_t count, size_t pos)
{
    char *p = (char *)arr + pos * elem;
    memmove(p, p + elem, (count - pos - 1) * elem);
}
