/* Fuzzes the rules-file parsers: the detection rules (detector/rules.h) and,
 * when built, the decision rules (decider/rules.h). Any input must give
 * either a validated rule set or an error naming file and line; never a
 * crash, a leak or undefined behaviour. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "detector/rules.h"
#ifdef MC_FUZZ_RULES_DECIDER
#include "decider/rules.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mc_error err;
    mc_detector_rules *rules = malloc(sizeof *rules);
    if (rules == NULL)
        return 0;
    mc_error_clear(&err);
    mc_status st = mc_detector_rules_load((const char *)data, size, "fuzz.rules", rules, &err);
    if (st == MC_OK) {
        if (mc_detector_rules_validate(rules, &err) != MC_OK)
            abort(); /* a loaded set must be valid */
    } else if (strncmp(err.msg, "fuzz.rules", 10) != 0) {
        abort(); /* every error names the file */
    }
    free(rules);
#ifdef MC_FUZZ_RULES_DECIDER
    mc_decider_rules *drules = malloc(sizeof *drules);
    if (drules == NULL)
        return 0;
    mc_error_clear(&err);
    st = mc_decider_rules_load((const char *)data, size, "fuzz.rules", drules, &err);
    if (st == MC_OK) {
        if (mc_decider_rules_validate(drules, &err) != MC_OK)
            abort();
    } else if (strncmp(err.msg, "fuzz.rules", 10) != 0) {
        abort();
    }
    free(drules);
#endif
    return 0;
}
