/* Tables kept sorted in caller memory: the lookup and the shifting every
 * pure core does on its incidents, actions, targets, services and nodes.
 * One version, so all of them agree on which position a search returns and
 * none gets the element counts of a shift wrong. Nothing here allocates. */
#ifndef MC_CORE_TABLE_H
#define MC_CORE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Binary search of n positions for id. Position p names record index[p]
 * when index is not NULL, else record p; record r is the stride bytes at
 * records + r * stride, and its NUL-terminated id starts id_offset bytes
 * into it. The ids, in position order, must be sorted by strcmp and
 * distinct.
 *
 * Returns the position of the record whose id equals id (*found true), or
 * the position where id would be inserted to keep the order (*found
 * false). At most about log2(n) + 1 comparisons. */
size_t mc_table_find_id(const void *records, size_t stride, size_t id_offset, const uint32_t *index,
                        size_t n, const char *id, bool *found);

/* Moves elements [pos, count) of arr (elem bytes each) up by one, so that
 * position pos is free for a new element. arr must have room for count + 1
 * elements and pos <= count. */
void mc_table_open(void *arr, size_t elem, size_t count, size_t pos);

/* Moves elements (pos, count) of arr down by one over the element at pos,
 * which is dropped; pos < count. The last slot keeps a stale copy. */
void mc_table_close(void *arr, size_t elem, size_t count, size_t pos);

#endif
