/* The subjects of a run (CONTRACTS.md) as the harness sees them: which stage
 * produces each, under which producer name, and which message type its
 * payload is. The closed loop, the re-drive, `replay inspect` and `replay
 * diff` all decode recorded bytes through this one table. */
#ifndef MC_HARNESS_SUBJECTS_H
#define MC_HARNESS_SUBJECTS_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "common/v1/stamp.pb-c.h"

/* Bits naming the four cores, for --component. */
enum {
    MC_COMP_ENGINE = 1u << 0,
    MC_COMP_DETECTOR = 1u << 1,
    MC_COMP_AGENT = 1u << 2,
    MC_COMP_ORCHESTRATOR = 1u << 3,
    MC_COMP_ALL = 0xFu
};

/* The engine's recorded inputs (trace.v1.EngineInput, stage
 * MC_TRACE_STAGE_INPUTS): written by the sim-engine, never published. */
#define MC_SUBJECT_ENGINE_INPUTS "sim.inputs"
#define MC_PRODUCER_ENGINE_INPUTS "sim-engine-inputs"

typedef struct mc_subject_info {
    const char *subject;
    uint32_t stage; /* common.v1.Stage of the producer */
    const char *producer;
    const ProtobufCMessageDescriptor *desc;
} mc_subject_info;

/* The entry for subject, or NULL for a subject no core publishes. */
const mc_subject_info *mc_subject_lookup(const char *subject);

/* "engine", "detector", "agent", "orchestrator", "inputs" (stage 5);
 * unknown stages give "unknown". Never NULL. */
const char *mc_stage_name(uint32_t stage);
/* The component bit of a stage (1..4), 0 otherwise. */
unsigned mc_stage_component(uint32_t stage);
/* Parses "engine|detector|agent|orchestrator|all" into component bits;
 * returns 0 for anything else. */
unsigned mc_component_parse(const char *s);

/* Unpacks payload as the subject's type (NULL when the subject is unknown or
 * the bytes do not decode). Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *mc_subject_unpack(const char *subject, const uint8_t *payload, size_t len);

/* The message's stamp (field 1 of every bus message), or NULL. */
Common__V1__Stamp *mc_message_stamp(ProtobufCMessage *m);

#endif
