#include <hiredis/hiredis.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* redisGetReply (hiredis 0.14, blocking context) with a ceiling on the bytes read for one reply.
   Redis answers whatever a key holds: an agent may have written 500 MB into its own stream or
   heartbeat, and hiredis would buffer all of it. Past `cap` bytes this stops reading, sets
   *too_large and returns REDIS_ERR; the context is then mid-reply and must be freed. */
static inline int hydra_get_reply_capped(redisContext *c, void **reply, unsigned long long cap, int *too_large) {
    void *aux = NULL;
    int wdone = 0;
    unsigned long long total = 0;
    *too_large = 0;
    if (redisGetReplyFromReader(c, &aux) == REDIS_ERR) return REDIS_ERR;
    if (aux == NULL) {
        do {
            if (redisBufferWrite(c, &wdone) == REDIS_ERR) return REDIS_ERR;
        } while (!wdone);
        do {
            char buf[1024 * 16];
            ssize_t n = read(c->fd, buf, sizeof(buf));
            if (n == -1) {
                if (errno == EINTR) continue;
                c->err = REDIS_ERR_IO;
                snprintf(c->errstr, sizeof(c->errstr), "%s", strerror(errno));
                return REDIS_ERR;
            }
            if (n == 0) {
                c->err = REDIS_ERR_EOF;
                snprintf(c->errstr, sizeof(c->errstr), "%s", "Server closed the connection");
                return REDIS_ERR;
            }
            total += (unsigned long long)n;
            if (total > cap) { *too_large = 1; return REDIS_ERR; }
            if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
                c->err = c->reader->err;
                snprintf(c->errstr, sizeof(c->errstr), "%s", c->reader->errstr);
                return REDIS_ERR;
            }
            if (redisGetReplyFromReader(c, &aux) == REDIS_ERR) return REDIS_ERR;
        } while (aux == NULL);
    }
    *reply = aux;
    return REDIS_OK;
}
