/* Building and recognising the job's topic names, in one place. */
#include "esgd/topics.h"

#include <stdio.h>
#include <string.h>

void topic_config(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/config", job);
}

void topic_latest_model(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/model", job);
}

void topic_round_model(char out[TOPIC_MAX], const char *job, uint32_t round)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/round/%u/model", job, round);
}

void topic_round_grad(char out[TOPIC_MAX], const char *job, uint32_t round, uint32_t agent)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/round/%u/grad/%u", job, round, agent);
}

void topic_status(char out[TOPIC_MAX], const char *job, uint32_t agent)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/status/%u", job, agent);
}

void topic_agent_model(char out[TOPIC_MAX], const char *job, uint32_t agent)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/agent/%u/model", job, agent);
}

void topic_agent_config(char out[TOPIC_MAX], const char *job, uint32_t agent)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/agent/%u/config", job, agent);
}

void topic_lease(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/lease", job);
}

void topic_filter_round_models(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/round/+/model", job);
}

void topic_filter_grads(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/round/+/grad/+", job);
}

void topic_filter_status(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/status/+", job);
}

void topic_filter_all(char out[TOPIC_MAX], const char *job)
{
    snprintf(out, TOPIC_MAX, "esgd/%s/#", job);
}

/* A decimal uint32 ending at '/' or the end; advances *p past it. */
static int parse_number(const char **p, uint32_t *value)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
        return 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX)
            return 0;
        s++;
    }
    *value = (uint32_t)v;
    *p = s;
    return 1;
}

topic_info topic_parse(const char *topic, const char *job)
{
    topic_info info = {TOPIC_UNKNOWN, 0, 0};
    size_t jlen = strlen(job);
    if (strncmp(topic, "esgd/", 5) != 0 || strncmp(topic + 5, job, jlen) != 0 || topic[5 + jlen] != '/')
        return info;
    const char *rest = topic + 5 + jlen + 1;
    if (strcmp(rest, "config") == 0) {
        info.kind = TOPIC_CONFIG;
    } else if (strcmp(rest, "model") == 0) {
        info.kind = TOPIC_LATEST_MODEL;
    } else if (strcmp(rest, "lease") == 0) {
        info.kind = TOPIC_LEASE;
    } else if (strncmp(rest, "status/", 7) == 0) {
        rest += 7;
        if (parse_number(&rest, &info.agent) && *rest == '\0')
            info.kind = TOPIC_STATUS;
    } else if (strncmp(rest, "agent/", 6) == 0) {
        rest += 6;
        if (parse_number(&rest, &info.agent) && strcmp(rest, "/model") == 0)
            info.kind = TOPIC_AGENT_MODEL;
        else if (strcmp(rest, "/config") == 0)
            info.kind = TOPIC_AGENT_CONFIG;
    } else if (strncmp(rest, "round/", 6) == 0) {
        rest += 6;
        if (!parse_number(&rest, &info.round))
            return info;
        if (strcmp(rest, "/model") == 0) {
            info.kind = TOPIC_ROUND_MODEL;
        } else if (strncmp(rest, "/grad/", 6) == 0) {
            rest += 6;
            if (parse_number(&rest, &info.agent) && *rest == '\0')
                info.kind = TOPIC_ROUND_GRAD;
        }
    }
    return info;
}

bool topic_splits_job_name(const char *topic, const char *job)
{
    if (!strchr(job, '.') || strncmp(topic, "esgd/", 5) != 0)
        return false;
    size_t n = strlen(job);
    for (size_t i = 0; i < n; i++)
        if (topic[5 + i] != (job[i] == '.' ? '/' : job[i]))
            return false;
    return topic[5 + n] == '/';
}
