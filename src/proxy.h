/* proxy.h: who the client is behind proxies. A list of trusted networks (--trusted-proxies,
 * CIDR), and the client address of a request from the peer and its X-Forwarded-For entries,
 * taken right to left past every trusted proxy (nginx's real_ip_recursive): the right-most
 * entry that is not a trusted proxy, which the nearest trusted proxy wrote, never the first one,
 * which the client wrote. Pure functions over strings and addresses (fuzzed by fuzz_head). */
#ifndef SK_PROXY_H
#define SK_PROXY_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct sk_cidr_s {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network, host bits cleared */
    int bits;         /* prefix length */
} sk_cidr_t;

typedef struct sk_cidrs_s {
    sk_cidr_t *v;
    size_t n;
} sk_cidrs_t;

/* Parses "CIDR[,CIDR...]" (an address alone is /32 or /128; spaces around entries allowed).
 * Returns 0, or -1 with a message in err. */
int sk_cidrs_parse(const char *list, sk_cidrs_t *out, char *err, size_t errlen);
void sk_cidrs_dispose(sk_cidrs_t *c);

/* Parses a numeric address (IPv4, IPv6, [IPv6]; an IPv4-mapped IPv6 address counts as IPv4)
 * of len bytes into family/addr. Returns 0 or -1. */
int sk_ip_parse(const char *s, size_t len, int *family, uint8_t addr[16]);

/* 1 when the address is in one of the networks. */
int sk_cidrs_match(const sk_cidrs_t *c, int family, const uint8_t addr[16]);

/* The client address, as text into out (NI_MAXHOST bytes): `peer` (numeric text) when it is not
 * trusted (trust_peer 0 and not in `trusted`) or no X-Forwarded-For entries follow, else the
 * right-most entry of xff[0..nxff) (the headers in order, each a comma list) that is not in
 * `trusted`; when every entry is trusted, the left-most; an entry that is not an address stops
 * the walk at the trusted hop to its right. trust_peer: --trust-proxy (the peer is a proxy, no
 * entry is). Returns the length written. */
size_t sk_proxy_client(const sk_cidrs_t *trusted, int trust_peer, const char *peer, const char *const *xff,
                       const size_t *xff_len, size_t nxff, char *out);

#endif
