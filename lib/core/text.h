/* Strings into the fixed-size buffers of the pure cores' records. Two
 * policies, each in one place: an id either fits whole or is refused (a cut
 * id would never match again), and free text for people is cut at a UTF-8
 * character boundary (a cut never leaves half a character for the JSON
 * encoder). NULL reads as "". */
#ifndef MC_CORE_TEXT_H
#define MC_CORE_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* True when src (NULL as "") fits a buffer of cap bytes with its NUL. */
bool mc_text_fits(const char *src, size_t cap);

/* Copies src (NULL as "") whole into dst (cap bytes). When it does not fit,
 * returns false and leaves dst unchanged. */
bool mc_text_copy(char *dst, size_t cap, const char *src);

/* Copies src (NULL as "") into dst (cap >= 1 bytes), cut to at most cap - 1
 * bytes; a cut drops the UTF-8 character it falls in whole. */
void mc_text_copy_cut(char *dst, size_t cap, const char *src);

#endif
