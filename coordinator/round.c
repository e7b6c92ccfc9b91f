/* One round of esgd-coordinator over MQTT: the model goes out, agents'
 * statuses, updates and other coordinators' leases come in and are handled
 * (the arithmetic is the core's, coordinator.h), and the round waits until
 * every live agent has answered, or a quorum has and the timeout passed,
 * publishing the model again when the round stalls or the broker came back. */
#include <string.h>
#include <time.h>

#include "esgd/log.h"
#include "esgd/runtime.h"
#include "esgd/topics.h"
#include "run.h"

esgd_status run_publish(run *r, const char *topic, const uint8_t *msg, size_t size, bool retained)
{
    esgd_error err = {0};
    esgd_status st = mqtt_link_publish(r->link, topic, msg, size, 1, retained, &err);
    if (st != ESGD_OK)
        log_error("%s", err.message);
    else
        coordinator_note_published(r->coordinator, size);
    return st;
}

void run_count_lease_bytes(run *r)
{
    uint64_t now = atomic_load(&r->lease.published_bytes); /* the refresh thread adds to it */
    coordinator_note_published(r->coordinator, now - r->lease_bytes_counted);
    r->lease_bytes_counted = now;
}

uint64_t run_traffic(const run *r)
{
    const coordinator_counters *k = coordinator_get_counters(r->coordinator);
    /* Updates go into the broker and out to us; models go in once
     * (published) and out to each agent (downlink, sync). */
    return 2 * (k->uplink_bytes + k->rejected_bytes + k->unused_uplink_bytes) + k->published_bytes +
           k->downlink_bytes + k->sync_bytes;
}

esgd_status run_publish_model(run *r, bool again)
{
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    char topic[TOPIC_MAX];
    uint32_t round = coordinator_round(r->coordinator);
    esgd_status st = ESGD_OK;
    if (again && (st = lease_publish(&r->lease, r->link, &err)) != ESGD_OK)
        log_warn("%s", err.message); /* the job goes on without it */
    st = ESGD_OK;
    if (again && (st = coordinator_config_message(r->coordinator, &msg, &size, &err)) == ESGD_OK) {
        topic_config(topic, r->cfg.job);
        st = run_publish(r, topic, msg, size, true);
    }
    if (st == ESGD_OK && (st = coordinator_full_model(r->coordinator, &msg, &size, &err)) == ESGD_OK) {
        topic_latest_model(topic, r->cfg.job);
        if ((st = run_publish(r, topic, msg, size, true)) == ESGD_OK)
            r->traffic_at_retained = run_traffic(r);
    }
    if (st == ESGD_OK && (again || (st = coordinator_round_model(r->coordinator, &msg, &size, &err)) == ESGD_OK)) {
        topic_round_model(topic, r->cfg.job, round);
        st = run_publish(r, topic, msg, size, false);
    }
    if (st != ESGD_OK && err.message[0])
        log_error("round %u: cannot publish the model%s: %s", round, again ? " again" : "", err.message);
    return st;
}

/* Floods of bad messages cost one log line per 10 s each, with a count. */
static log_limiter data_conflict_log = LOG_LIMITER(10), status_refused_log = LOG_LIMITER(10),
                   update_rejected_log = LOG_LIMITER(10), update_unused_log = LOG_LIMITER(10),
                   conflict_log = LOG_LIMITER(10), sync_log = LOG_LIMITER(10), config_request_log = LOG_LIMITER(10);

#define GENERATION_SLACK_SECONDS 86400

/* Publishes what `encode` makes (signed by the coordinator) on the agent's
 * own topic made by `topic`; its size, or 0 when it failed (logged). */
static size_t send_to_agent(run *r, uint32_t agent, const char *what,
                            esgd_status (*encode)(esgd_coordinator *, const uint8_t **, size_t *, esgd_error *),
                            void (*topic)(char[TOPIC_MAX], const char *, uint32_t))
{
    esgd_error err = {0};
    const uint8_t *msg;
    size_t size;
    char name[TOPIC_MAX];
    if (encode(r->coordinator, &msg, &size, &err) != ESGD_OK) {
        log_error("the %s for agent %u: %s", what, agent, err.message);
        return 0;
    }
    topic(name, r->cfg.job, agent);
    return run_publish(r, name, msg, size, false) == ESGD_OK ? size : 0;
}

/* An agent of our run lacks the current model: it said "syncing" (it
 * missed a round, or its link was down) or answered a round long closed
 * (it took an old retained model). It gets the current model on its own
 * topic, at most once a round, so a replayed or repeated message costs at
 * most one model a round. `why` ends the log line. */
static void send_model_to(run *r, uint32_t agent, const char *why)
{
    uint32_t round = coordinator_round(r->coordinator);
    if (!r->lease_claimed || coordinator_done(r->coordinator) || r->synced_round[agent] == round + 1)
        return;
    size_t size = send_to_agent(r, agent, "model", coordinator_sync_model, topic_agent_model);
    if (!size)
        return;
    r->synced_round[agent] = round + 1;
    log_info_limited(&sync_log, "agent %u lacks the current model (%s): sent round %u to it (%zu bytes)", agent, why,
                     round, size);
}

/* An agent that has no configuration of our run (a broker with retained
 * messages per node never gave it ours) said "syncing": it gets the signed
 * configuration on its own topic, at most every 2 s. */
static void send_config_to(run *r, uint32_t agent)
{
    double t = monotonic_seconds();
    if (!r->lease_claimed || (r->config_sent_at[agent] > 0 && t - r->config_sent_at[agent] < 2.0))
        return;
    size_t size = send_to_agent(r, agent, "configuration", coordinator_config_message, topic_agent_config);
    if (!size)
        return;
    r->config_sent_at[agent] = t;
    log_info_limited(&config_request_log, "agent %u asked for the configuration: sent it (%zu bytes)", agent, size);
}

static void handle_status(run *r, uint32_t agent, const mqtt_message *m)
{
    esgd_error err = {0};
    status_msg s;
    size_t body = 0;
    if (m->size == 0 || agent >= r->cfg.agents)
        return; /* an empty payload clears a retained status */
    esgd_status st = envelope_open(m->data, m->size, &r->agent_keys[agent], &body, &err);
    if (st == ESGD_OK)
        st = codec_decode_status(r->status_decoder, m->data, body, &s, &err);
    if (st == ESGD_OK && s.agent != agent)
        st = esgd_error_set(&err, ESGD_ERR_MISMATCH, "status names agent %u", s.agent);
    /* A generation is a coordinator start's time in seconds (or one above
     * its checkpoint's): one far beyond both ours and now was never made by
     * a coordinator, and following it would let one agent push ours to the
     * top of its range. A day of slack covers clocks of other hosts. */
    uint64_t newest = (uint64_t)time(NULL) > coordinator_generation(r->coordinator) ? (uint64_t)time(NULL)
                                                                                     : coordinator_generation(r->coordinator);
    if (st == ESGD_OK && s.generation > newest + GENERATION_SLACK_SECONDS)
        st = esgd_error_set(&err, ESGD_ERR_RANGE, "generation %u is beyond any coordinator start (newest %llu)",
                            s.generation, (unsigned long long)newest);
    if (st != ESGD_OK) {
        r->status_rejected++;
        log_warn_limited(&status_refused_log, "agent %u: status message refused (%s): %s", agent,
                         esgd_status_name(st), err.message);
        return;
    }
    if (s.state == AGENT_STATE_SYNCING && s.run != r->cfg.run) {
        send_config_to(r, agent);
        return;
    }
    if (s.run != 0 && s.run != r->cfg.run)
        return; /* a retained status of an earlier run */
    status_note note = coordinator_note_status(r->coordinator, &s);
    if (note.overlaps_with == (int64_t)agent)
        log_warn_limited(&data_conflict_log, "agent %u now trains on shard %u/%u (data %016llx), not what it announced "
                         "before: two agents with one id?", agent, s.shard, s.shards, (unsigned long long)s.data_fp);
    else if (note.overlaps_with >= 0)
        log_warn_limited(&data_conflict_log, "agent %u trains on the same %s as agent %u (shard %u/%u, data %016llx): "
                         "their updates count twice", agent, note.same_shard ? "shard" : "data",
                         (unsigned)note.overlaps_with, s.shard, s.shards, (unsigned long long)s.data_fp);
    if (note.rounds_lost)
        log_warn("agent %u is back from older state: it last answered round %u, %u rounds after it had gone to us; "
                 "its residuals lack them", agent, s.round, note.rounds_lost);
    if (note.generation_raised && r->lease_claimed) {
        log_warn("agent %u follows a newer coordinator generation than ours; this one is now generation %u",
                 agent, coordinator_generation(r->coordinator));
        run_publish_model(r, true);
    }
    if (s.state == AGENT_STATE_SYNCING)
        send_model_to(r, agent, "status syncing");
    uint8_t online = s.state == AGENT_STATE_ONLINE || s.state == AGENT_STATE_SYNCING;
    /* An "offline" not preceded by an "online" in this run may be an old
     * retained Last Will: it does not mark the agent dead. */
    if (!online && r->agent_online[agent] == 0)
        return;
    if (online)
        r->missed[agent] = 0; /* it says it is back: wait for it again */
    if (online && r->agent_online[agent] != 2)
        r->came_online_at = monotonic_seconds();
    if (r->agent_online[agent] != online + 1) {
        log_info("agent %u is %s (last answered round %u)", agent, agent_state_name(s.state), s.round);
        r->agent_online[agent] = (uint8_t)(online + 1);
    }
}

void run_handle_message(run *r, const mqtt_message *m)
{
    topic_info t = topic_parse(m->topic, r->cfg.job);
    if (t.kind == TOPIC_UNKNOWN && topic_splits_job_name(m->topic, r->cfg.job) && !r->must_stop) {
        log_error("the broker delivered %s for job %s: it turns the '.' of job names into topic levels (RabbitMQ's "
                  "MQTT plugin does); use a job name without '.'", m->topic, r->cfg.job);
        r->must_stop = true;
        return;
    }
    esgd_error err = {0};
    if (t.kind == TOPIC_STATUS) {
        handle_status(r, t.agent, m);
        return;
    }
    if (t.kind == TOPIC_LEASE) {
        if (lease_lost(&r->lease, r->link, m, &err)) {
            log_error("%s; stopping", err.message);
            r->must_stop = true;
        }
        return;
    }
    if (t.kind != TOPIC_ROUND_GRAD)
        return;
    uint64_t conflicting = coordinator_get_counters(r->coordinator)->conflicting;
    update_outcome outcome = coordinator_receive_update(r->coordinator, m->data, m->size, t.agent, t.round, &err);
    if (coordinator_get_counters(r->coordinator)->conflicting != conflicting)
        log_warn_limited(&conflict_log, "round %u: %s", coordinator_round(r->coordinator), err.message);
    /* Any genuine update, even a late one, shows the agent is alive. */
    if (outcome != UPDATE_REJECTED && t.agent < r->cfg.agents)
        r->missed[t.agent] = 0;
    /* An answer to a round before the last closed one: the agent holds a
     * model the round's delta cannot apply to (an old retained model, a
     * long stall), so it gets the current one now instead of asking after
     * the next delta. A round late by one needs nothing: it takes the delta. */
    if (outcome == UPDATE_LATE && coordinator_agent_behind(r->coordinator, t.agent, t.round))
        send_model_to(r, t.agent, "answered a round long closed");
    if (outcome == UPDATE_ACCEPTED) {
        const update_msg *u = coordinator_last_update(r->coordinator);
        metrics_agent_update(r->metrics, u->agent, u->round, u->loss);
    }
    metrics_progress(r->metrics, r->coordinator);
    if (outcome == UPDATE_REJECTED)
        log_warn_limited(&update_rejected_log, "round %u: rejected update on %s (%s): %s",
                         coordinator_round(r->coordinator), m->topic, esgd_status_name(err.status), err.message);
    else if (outcome != UPDATE_ACCEPTED)
        log_info_limited(&update_unused_log, "round %u: %s update on %s", coordinator_round(r->coordinator),
                         update_outcome_name(outcome), m->topic);
}


/* Every agent that may still answer has: the others are offline by their
 * Last Will or missed DEAD_AFTER_MISSED rounds in a row. A dead agent is
 * waited for again as soon as an update of it arrives. */
static bool all_live_answered(const run *r)
{
    for (uint32_t a = 0; a < r->cfg.agents; a++)
        if (!coordinator_has_update(r->coordinator, a) && r->agent_online[a] != 1 &&
            r->missed[a] < DEAD_AFTER_MISSED)
            return false;
    return true;
}

/* Every agent has said it is online (or offline) or sent an update since this start. */
static bool all_came_online(const run *r)
{
    for (uint32_t a = 0; a < r->cfg.agents; a++)
        if (r->agent_online[a] == 0 && !coordinator_has_update(r->coordinator, a))
            return false;
    return true;
}

bool run_collect_round(run *r, uint32_t quorum)
{
    double opened = monotonic_seconds(), last_notice = opened, last_progress = opened;
    uint32_t agents = r->cfg.agents, seen = coordinator_participants(r->coordinator);
    /* At thousands of agents one fan-out of the model can take longer than
     * --republish-after, and publishing it again to everyone then only
     * feeds the stall: wait at least twice the last round's length (0 when
     * that round itself stalled, so stalls do not lengthen the wait). */
    double republish_after = r->set.republish_after;
    r->republished = false;
    if (republish_after > 0 && 2 * r->last_round_seconds > republish_after)
        republish_after = 2 * r->last_round_seconds;
    for (;;) {
        uint32_t have = coordinator_participants(r->coordinator);
        double now = monotonic_seconds(), waited = now - opened;
        /* Back from a lost connection: the broker may have lost everything
         * (retained configuration and model, queued messages), so it all
         * goes out again half a second later, once the link has settled. */
        uint64_t connects = mqtt_link_get_counters(r->link).connects;
        if (connects != r->connects_seen) {
            if (r->connects_seen)
                last_progress = now - republish_after + 0.5;
            r->connects_seen = connects;
        }
        /* The first round also waits for agents still starting up (a
         * gateway boots, loads its data): they are not late yet, and the
         * round timeout runs from when the last of them came online. */
        double timeout = r->set.round_timeout;
        if (!r->rounds_run && !all_came_online(r))
            timeout = r->set.start_timeout > timeout ? r->set.start_timeout : timeout;
        else if (!r->rounds_run && r->came_online_at > opened)
            waited = now - r->came_online_at;
        if (have == agents || (have >= quorum && (waited >= timeout || all_live_answered(r))))
            return true;
        if (stop_requested() || r->must_stop)
            return false;
        if (have != seen) {
            seen = have;
            last_progress = now;
        }
        /* Only while connected: what the link buffers offline goes out on
         * reconnection anyway, and a stall right after it republishes. */
        if (republish_after > 0 && now - last_progress >= republish_after && mqtt_link_connected(r->link)) {
            log_info("round %u: no new update for %.0f s (%u of %u agents); publishing the model again",
                     coordinator_round(r->coordinator), now - last_progress, have, agents);
            r->republished = true;
            if (run_publish_model(r, true) != ESGD_OK)
                return true; /* the error is logged; the round closes with what it has */
            last_progress = now;
        }
        if (monotonic_seconds() - last_notice >= 30) {
            log_warn("round %u: %u of %u agents after %.0f s (quorum %u); waiting",
                     coordinator_round(r->coordinator), have, agents, waited, quorum);
            last_notice = monotonic_seconds();
        }
        mqtt_message m;
        if (mqtt_link_next(r->link, 50, &m))
            run_handle_message(r, &m);
        if (r->metrics) {
            mqtt_link_counters k = mqtt_link_get_counters(r->link);
            metrics_link(r->metrics, &k);
        }
    }
}

void run_flush_logs(void)
{
    log_limiter_flush(&status_refused_log, "refused status messages");
    log_limiter_flush(&update_rejected_log, "rejected updates");
    log_limiter_flush(&update_unused_log, "duplicate, late or early updates");
    log_limiter_flush(&conflict_log, "conflicting updates");
    log_limiter_flush(&sync_log, "models sent to agents that asked");
    log_limiter_flush(&config_request_log, "configurations sent to agents that asked");
}
