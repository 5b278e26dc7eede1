/* A Prometheus metrics registry and the GET /metrics handler.
 *
 * A service registers its series at start: counters, gauges and histograms,
 * each with a fixed set of labels (one registration per label set; series
 * of the same name share one HELP and TYPE and must have the same type and
 * help). Updates are lock-free atomics, so NATS delivery threads may count;
 * registration and rendering take a mutex.
 *
 * Output is the Prometheus text exposition format 0.0.4 and passes
 * `promtool check metrics`: names are checked at registration (counters must
 * end in _total, "le" is reserved for histogram buckets), HELP text and
 * label values are escaped, histogram buckets are cumulative with a final
 * le="+Inf" equal to _count.
 *
 *     mc_http_metric_label l[] = {{"stage", "detector"}};
 *     mc_http_counter *c;
 *     mc_http_metrics_counter(reg, "microcloud_messages_total", "Messages handled", l, 1, &c, err);
 *     mc_http_counter_inc(c);
 */
#ifndef MC_HTTP_METRICS_H
#define MC_HTTP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

typedef struct mc_http_metrics mc_http_metrics;
typedef struct mc_http_counter mc_http_counter;
typedef struct mc_http_gauge mc_http_gauge;
typedef struct mc_http_histogram mc_http_histogram;
struct mc_http_request;

typedef struct mc_http_metric_label {
    const char *name;
    const char *value;
} mc_http_metric_label;

mc_status mc_http_metrics_new(mc_http_metrics **out, mc_error *err);
/* Frees the registry and every series in it. NULL-safe. */
void mc_http_metrics_free(mc_http_metrics *reg);

/* Registers a series. name, help and labels are copied; the returned
 * series belongs to the registry. MC_ERR_INVALID for a bad name, label
 * name, empty help, or a name already used with another type or help;
 * MC_ERR_EXISTS for the same name and labels twice. */
mc_status mc_http_metrics_counter(mc_http_metrics *reg, const char *name, const char *help,
                                  const mc_http_metric_label *labels, size_t n_labels,
                                  mc_http_counter **out, mc_error *err);
mc_status mc_http_metrics_gauge(mc_http_metrics *reg, const char *name, const char *help,
                                const mc_http_metric_label *labels, size_t n_labels,
                                mc_http_gauge **out, mc_error *err);
/* bounds: the finite upper bounds of the buckets, strictly increasing (at
 * most 32); +Inf is added. */
mc_status mc_http_metrics_histogram(mc_http_metrics *reg, const char *name, const char *help,
                                    const mc_http_metric_label *labels, size_t n_labels,
                                    const double *bounds, size_t n_bounds,
                                    mc_http_histogram **out, mc_error *err);

/* Updates; thread-safe, NULL-safe (a NULL series is ignored). */
void mc_http_counter_inc(mc_http_counter *c);
void mc_http_counter_add(mc_http_counter *c, uint64_t n);
uint64_t mc_http_counter_value(const mc_http_counter *c);
void mc_http_gauge_set(mc_http_gauge *g, double v);
void mc_http_gauge_add(mc_http_gauge *g, double d);
double mc_http_gauge_value(const mc_http_gauge *g);
void mc_http_histogram_observe(mc_http_histogram *h, double v);

/* The exposition text; *out is malloc'd and NUL-terminated, caller frees. */
mc_status mc_http_metrics_render(mc_http_metrics *reg, char **out, size_t *len, mc_error *err);

/* Content-Type of the exposition format. */
#define MC_HTTP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Route handler for GET /metrics; ctx is the mc_http_metrics registry. */
void mc_http_metrics_handler(struct mc_http_request *req, void *ctx);

#endif
