/* redis_cluster.h: what the Redis store needs to speak Redis Cluster (docs/redis.md, "Redis
 * Cluster"), and the key layout every deployment shares (one Redis, Sentinel or Cluster):
 *
 *   - the key slot of a key (CRC16 of its hash tag, as Redis Cluster computes it) and, for each
 *     of the 16384 slots, a tag that maps to it (computed once), so that a key made for a slot
 *     ("sk:slot:{TAG}:sales") lives in that very slot next to the sales it indexes;
 *   - the slot map of an instance: which master serves which slot, from CLUSTER SLOTS, asked by
 *     one thread of the instance (blocking hiredis, off the workers' loops) at start, every few
 *     seconds, and at once when a worker asks (a MOVED, a lost master). The workers copy it when
 *     its version changes and keep one connection per master (store_redis.c).
 *
 * The map is the only state shared between threads here; everything else is pure. */
#ifndef SK_REDIS_CLUSTER_H
#define SK_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include "redis_conn.h"

#define SK_REDIS_SLOTS 16384
#define SK_REDIS_NODES_MAX 64 /* masters of one cluster */
#define SK_REDIS_TAG_MAX 8    /* a slot's tag, with its NUL */

/* CRC16/XMODEM, Redis Cluster's key hash. */
uint16_t sk_redis_crc16(const char *p, size_t n);
/* The slot of a key: the CRC16 of its hash tag (what lies between the first '{' and the next '}',
 * when not empty), else of the whole key. */
int sk_redis_key_slot(const char *key, size_t n);
/* The slot of every key of a sale (its id is the hash tag of "sk:{sale}..."). */
int sk_redis_sale_slot(const char *sale, size_t n);
/* A short tag (decimal digits) whose slot is `slot`: the smallest number whose decimal text
 * hashes there. Thread-safe (computed once). */
const char *sk_redis_slot_tag(int slot);

/* One master of the map. */
typedef struct sk_redis_node_addr_s {
    char host[256];
    int port;
} sk_redis_node_addr_t;

/* A copy of the slot map. */
typedef struct sk_redis_map_s {
    unsigned version;
    int complete; /* every slot has a master */
    int nnodes;
    sk_redis_node_addr_t nodes[SK_REDIS_NODES_MAX];
    uint8_t slot_node[SK_REDIS_SLOTS]; /* index into nodes; 0xff: no master */
} sk_redis_map_t;

typedef struct sk_redis_cluster_s sk_redis_cluster_t;

/* Starts the instance's map thread for conf's seeds (conf outlives it). NULL if the thread
 * cannot start. */
sk_redis_cluster_t *sk_redis_cluster_start(const sk_redis_conf_t *conf);
void sk_redis_cluster_stop(sk_redis_cluster_t *cl);
/* Asks for a new map soon (at most every 100 ms); any thread, never blocks. */
void sk_redis_cluster_refresh(sk_redis_cluster_t *cl);
/* The version of the current map (0: none yet); any thread. */
unsigned sk_redis_cluster_version(sk_redis_cluster_t *cl);
/* 1 while the current map gives every slot a master. */
int sk_redis_cluster_complete(sk_redis_cluster_t *cl);
/* Copies the current map into *out. */
void sk_redis_cluster_copy(sk_redis_cluster_t *cl, sk_redis_map_t *out);

/* Parses a CLUSTER SLOTS reply into map (nodes and slot_node; complete set); `asked` is the
 * address the reply came from, for a node that names itself with an empty host. 0, or -1 when
 * the reply is not CLUSTER SLOTS's shape. */
int sk_redis_map_parse(sk_redis_map_t *map, const void *reply, const char *asked_host);

/* "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381": 1 for MOVED, 2 for ASK, with the slot
 * and address; 0 for any other error text. */
int sk_redis_redirect_parse(const char *err, int *slot, char *host, size_t hostlen, int *port);

/* 1 when an error reply is a script stopped by a slot in migration: a command inside it named a
 * key this node does not have while the slot was migrating or importing ("ERR Script attempted to
 * access a non local key in a cluster node script: ..." in Redis 7.0; "Lua script attempted ..."
 * before; "... undeclared keys were accessed during rehashing of the slot" in Valkey 8). The
 * scripts touch every key they name themselves before their first write (common.lua's touch), so
 * such a script wrote nothing: the store takes it as TRYAGAIN. 0 for anything else. */
int sk_redis_script_migrating(const char *err);

/* Moves the keys of the layout before issue 16 (sk:sales, sk:holding, sk:tombstones: docs/redis.md,
 * "Migration") into the per-slot ones, on a blocking hiredis context (a redisContext *) of a
 * standalone Redis, at start; the old keys go last, so a migration cut short runs again at the next
 * start. 1 when it migrated, 0 when there was nothing to migrate, -1 on an error. */
int sk_redis_layout_migrate(void *c);

#endif
