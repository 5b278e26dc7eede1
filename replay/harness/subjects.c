#include "harness/subjects.h"

#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"
#include "trace/format.h"
#include "trace/v1/trace.pb-c.h"

static const mc_subject_info subjects[] = {
    {"sim.metrics", COMMON__V1__STAGE__STAGE_ENGINE, "sim-engine",
     &sim__v1__metric_snapshot__descriptor},
    {"sim.events", COMMON__V1__STAGE__STAGE_ENGINE, "sim-engine",
     &sim__v1__simulation_event__descriptor},
    {"sim.watermark", COMMON__V1__STAGE__STAGE_ENGINE, "sim-engine",
     &ops__v1__watermark__descriptor},
    {"ops.incidents", COMMON__V1__STAGE__STAGE_DETECTOR, "signal-service",
     &ops__v1__incident__descriptor},
    {"ops.watermark.detector", COMMON__V1__STAGE__STAGE_DETECTOR, "signal-service",
     &ops__v1__watermark__descriptor},
    {"ops.actions", COMMON__V1__STAGE__STAGE_AGENT, "agent-service", &ops__v1__action__descriptor},
    {"ops.watermark.agent", COMMON__V1__STAGE__STAGE_AGENT, "agent-service",
     &ops__v1__watermark__descriptor},
    {"ops.decisions", COMMON__V1__STAGE__STAGE_ORCHESTRATOR, "orchestrator",
     &ops__v1__approval_decision__descriptor},
    {"ops.commands", COMMON__V1__STAGE__STAGE_ORCHESTRATOR, "orchestrator",
     &ops__v1__apply_action_command__descriptor},
    {"ops.watermark.orchestrator", COMMON__V1__STAGE__STAGE_ORCHESTRATOR, "orchestrator",
     &ops__v1__watermark__descriptor},
    {MC_SUBJECT_ENGINE_INPUTS, MC_TRACE_STAGE_INPUTS, MC_PRODUCER_ENGINE_INPUTS,
     &trace__v1__engine_input__descriptor},
};

const mc_subject_info *mc_subject_lookup(const char *subject)
{
    if (!subject)
        return NULL;
    for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++)
        if (strcmp(subjects[i].subject, subject) == 0)
            return &subjects[i];
    return NULL;
}

const char *mc_stage_name(uint32_t stage)
{
    switch (stage) {
    case COMMON__V1__STAGE__STAGE_ENGINE: return "engine";
    case COMMON__V1__STAGE__STAGE_DETECTOR: return "detector";
    case COMMON__V1__STAGE__STAGE_AGENT: return "agent";
    case COMMON__V1__STAGE__STAGE_ORCHESTRATOR: return "orchestrator";
    case MC_TRACE_STAGE_INPUTS: return "inputs";
    default: return "unknown";
    }
}

unsigned mc_stage_component(uint32_t stage)
{
    return (stage >= 1 && stage <= 4) ? 1u << (stage - 1) : 0u;
}

unsigned mc_component_parse(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, "all") == 0)
        return MC_COMP_ALL;
    for (uint32_t st = 1; st <= 4; st++)
        if (strcmp(s, mc_stage_name(st)) == 0)
            return mc_stage_component(st);
    return 0;
}

ProtobufCMessage *mc_subject_unpack(const char *subject, const uint8_t *payload, size_t len)
{
    const mc_subject_info *si = mc_subject_lookup(subject);
    if (!si)
        return NULL;
    return protobuf_c_message_unpack(si->desc, NULL, len, payload);
}

Common__V1__Stamp *mc_message_stamp(ProtobufCMessage *m)
{
    if (!m)
        return NULL;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE || f->descriptor != &common__v1__stamp__descriptor)
        return NULL;
    return *(Common__V1__Stamp **)((char *)m + f->offset);
}
