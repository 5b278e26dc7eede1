#include "core/text.h"

#include <string.h>

bool mc_text_fits(const char *src, size_t cap)
{
    return strlen(src ? src : "") < cap;
}

bool mc_text_copy(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

void mc_text_copy_cut(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        /* Move the cut back while it falls on a continuation byte
         * (10xxxxxx): the character it is in is dropped whole. */
        while (n > 0 && ((unsigned char)src[n] & 0xC0u) == 0x80u)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}
