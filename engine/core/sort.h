/* A stable merge sort of index arrays for the engine core.
 *
 * The cores must not use qsort (it is not stable, so equal keys could come
 * out in any order, DESIGN.md rule 4). Sorting indices rather than records
 * keeps the records where they are and lets one comparator serve any table. */
#ifndef MC_ENGINE_SORT_H
#define MC_ENGINE_SORT_H

#include <stddef.h>
#include <stdint.h>

/* Returns <0, 0 or >0 as item a sorts before, with or after item b. Equal
 * items keep their input order, but comparators should still break ties
 * explicitly so the order never depends on how the input was built. */
typedef int (*mc_sort_cmp)(const void *ctx, uint32_t a, uint32_t b);

/* Sorts items[0..n) in place. scratch must hold n elements; it is caller
 * memory so the sort never allocates and cannot fail. */
void mc_sort_u32(uint32_t *items, size_t n, uint32_t *scratch, mc_sort_cmp cmp, const void *ctx);

#endif
