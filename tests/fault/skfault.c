/* skfault.c: fault injection for the end-to-end tests, as an LD_PRELOAD library. It makes the
 * disk fail under seckilld for real, at the system call: fsync/fdatasync (EIO), and pwrite
 * (ENOSPC or EIO) on files whose path contains SK_FAULT_MATCH (default ".db").
 *
 * It is steered by a control file named by SK_FAULT_FILE, read at every call it may fail (the
 * tests change it while the server runs): absent or empty, nothing fails; else one line
 * `OP COUNT DELAY_MS [ERRNO]`: the next COUNT calls of OP (fsync or pwrite; -1: all of them)
 * wait DELAY_MS and fail. Each failure is counted down in the file. Not for production builds:
 * it is built under tests/ and never installed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* Whether this call of `op` on fd must fail: 0, or the errno to fail with. */
static int should_fail(const char *op, int fd)
{
    const char *ctl = getenv("SK_FAULT_FILE");
    const char *match = getenv("SK_FAULT_MATCH");
    char path[512], link[64], want[16];
    long count = 0, delay = 0;
    int err = 0, rc = 0;
    if (ctl == NULL)
        return 0;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    if (strstr(path, match ? match : ".db") == NULL)
        return 0;
    pthread_mutex_lock(&lock);
    FILE *f = fopen(ctl, "r");
    int k = f ? fscanf(f, "%15s %ld %ld %d", want, &count, &delay, &err) : 0;
    if (f)
        fclose(f);
    if (k >= 2 && strcmp(want, op) == 0 && count != 0) {
        rc = k >= 4 && err > 0 ? err : EIO;
        if (count > 0 && (f = fopen(ctl, "w")) != NULL) {
            fprintf(f, "%s %ld %ld %d\n", want, count - 1, delay, rc);
            fclose(f);
        }
    }
    pthread_mutex_unlock(&lock);
    if (rc != 0 && k >= 3 && delay > 0) {
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return rc;
}

#define REAL(name, ret, ...)                                                                         \
    static ret (*real_##name)(__VA_ARGS__);                                                          \
    if (real_##name == NULL)                                                                         \
        real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name);

int fsync(int fd)
{
    REAL(fsync, int, int);
    int e = should_fail("fsync", fd);
    if (e != 0)
        return errno = e, -1;
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    REAL(fdatasync, int, int);
    int e = should_fail("fsync", fd);
    if (e != 0)
        return errno = e, -1;
    return real_fdatasync(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
    int e = should_fail("pwrite", fd);
    if (e != 0)
        return errno = e, -1;
    return real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
    REAL(pwrite64, ssize_t, int, const void *, size_t, off_t);
    int e = should_fail("pwrite", fd);
    if (e != 0)
        return errno = e, -1;
    return real_pwrite64(fd, buf, len, off);
}
