/* proxy.c: see proxy.h. */
#include "proxy.h"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

int sk_ip_parse(const char *s, size_t len, int *family, uint8_t addr[16])
{
    char buf[INET6_ADDRSTRLEN + 2];
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']')
        s++, len -= 2;
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, buf, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, addr) != 1)
        return -1;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        memset(addr + 4, 0, 12);
        *family = AF_INET;
        return 0;
    }
    *family = AF_INET6;
    return 0;
}

static void mask(uint8_t addr[16], int bits)
{
    for (int i = 0; i < 16; i++) {
        int keep = bits - i * 8;
        addr[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
}

int sk_cidrs_parse(const char *list, sk_cidrs_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *a = p, *z = p + n;
        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
            z--;
        const char *slash = memchr(a, '/', (size_t)(z - a));
        sk_cidr_t c;
        long bits = -1;
        if (sk_ip_parse(a, (size_t)((slash ? slash : z) - a), &c.family, c.addr) != 0)
            goto bad;
        if (slash != NULL) {
            char *end;
            char num[8];
            size_t l = (size_t)(z - slash - 1);
            if (l == 0 || l >= sizeof(num))
                goto bad;
            memcpy(num, slash + 1, l);
            num[l] = '\0';
            bits = strtol(num, &end, 10);
            if (*end != '\0' || num[0] < '0' || num[0] > '9')
                goto bad;
        }
        int max = c.family == AF_INET ? 32 : 128;
        c.bits = bits < 0 ? max : (int)bits;
        if (c.bits > max)
            goto bad;
        mask(c.addr, c.bits);
        out->v = sk_realloc(out->v, (out->n + 1) * sizeof(*out->v));
        out->v[out->n++] = c;
        if (e == NULL)
            return 0;
        p = e + 1;
        continue;
    bad:
        snprintf(err, errlen, "'%.*s' is not an address or CIDR network", (int)n, p);
        sk_cidrs_dispose(out);
        return -1;
    }
}

void sk_cidrs_dispose(sk_cidrs_t *c)
{
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

int sk_cidrs_match(const sk_cidrs_t *c, int family, const uint8_t addr[16])
{
    for (size_t i = 0; c != NULL && i < c->n; i++) {
        if (c->v[i].family != family)
            continue;
        uint8_t a[16];
        memcpy(a, addr, 16);
        mask(a, c->v[i].bits);
        if (memcmp(a, c->v[i].addr, 16) == 0)
            return 1;
    }
    return 0;
}

static size_t put(char *out, const char *s, size_t n)
{
    if (n > NI_MAXHOST - 1)
        n = NI_MAXHOST - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    return n;
}

/* The canonical text of an address (one client, one key: "::ffff:1.2.3.4" is "1.2.3.4"). */
static size_t put_ip(char *out, int family, const uint8_t addr[16])
{
    if (inet_ntop(family, addr, out, NI_MAXHOST) == NULL)
        return put(out, "unknown", 7);
    return strlen(out);
}

size_t sk_proxy_client(const sk_cidrs_t *trusted, int trust_peer, const char *peer, const char *const *xff,
                       const size_t *xff_len, size_t nxff, char *out)
{
    int family;
    uint8_t addr[16];
    size_t n = put(out, peer, strlen(peer));
    if (sk_ip_parse(peer, strlen(peer), &family, addr) == 0)
        n = put_ip(out, family, addr);
    else if (!trust_peer)
        return n;
    if (!trust_peer && !sk_cidrs_match(trusted, family, addr))
        return n;
    /* right to left: the last header's last entry first */
    for (size_t h = nxff; h-- > 0;) {
        const char *v = xff[h];
        size_t end = xff_len[h];
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            size_t a = start, z = end;
            while (a < z && (v[a] == ' ' || v[a] == '\t'))
                a++;
            while (z > a && (v[z - 1] == ' ' || v[z - 1] == '\t'))
                z--;
            if (z > a) { /* empty list elements are allowed (RFC 9110 5.6.1) and skipped */
                if (sk_ip_parse(v + a, z - a, &family, addr) != 0)
                    return n; /* not an address: the trusted hop to its right is all we know */
                n = put_ip(out, family, addr);
                if (!sk_cidrs_match(trusted, family, addr))
                    return n;
            }
            if (start == 0)
                break;
            end = start - 1;
        }
    }
    return n;
}
