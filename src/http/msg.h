/*
 * A protocol-neutral message head: request line or status line plus a list of fields. Codecs for
 * HTTP/1 (and later HTTP/2) translate to and from it. Strings are not NUL-terminated; they point
 * into the codec's input buffer until fy_msg_own() copies them into one block owned by the msg.
 * Fields are never physically deleted: `removed` hides them, so earlier pointers stay valid.
 */
#ifndef FY_MSG_H
#define FY_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/tokens.h"

struct fy_hdr {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    uint8_t tok; /* enum fy_token */
    bool removed;
};

struct fy_msg {
    const char *method; /* requests */
    const char *target;
    uint32_t method_len;
    uint32_t target_len;
    uint16_t status;       /* responses */
    uint8_t version_minor; /* HTTP/1.x; requests and responses */
    bool keep_alive;       /* per the message's version and Connection field */
    bool upgrade;          /* Connection: upgrade with an Upgrade field */
    bool chunked;          /* body framed by chunked coding */
    bool expect_continue;
    int64_t content_length; /* -1 when absent */
    const char *reason;
    uint32_t reason_len;
    uint32_t nhdrs, cap;
    struct fy_hdr *hdrs;
    char *owned;        /* block holding all strings after fy_msg_own(); kept across resets */
    uint32_t owned_cap; /* its size */
    bool owns;          /* the strings point into `owned` */
};

void fy_msg_init(struct fy_msg *m);

/* Frees the header array and owned strings; the struct can be re-initialised afterwards. */
void fy_msg_free(struct fy_msg *m);

/* Empties the message but keeps its storage (header array, owned block) for the next one. */
void fy_msg_reset(struct fy_msg *m);

/* Moves the message `from` into `to`, whose content must be empty (reset or initialised): `to`
 * takes from's content and storage, and `from` is left empty holding to's former storage, so a
 * codec and a session can trade one message after another without allocating. */
void fy_msg_move(struct fy_msg *to, struct fy_msg *from);

/* Appends a field (strings are referenced, not copied). Returns 0 or -1 when out of memory. */
int fy_msg_add(struct fy_msg *m, const char *name, uint32_t nlen, const char *value, uint32_t vlen,
               enum fy_token tok);

/* First visible field with this token, or NULL. */
struct fy_hdr *fy_msg_find_tok(struct fy_msg *m, enum fy_token tok);

/* First visible field with this name (any case), or NULL. */
struct fy_hdr *fy_msg_find(struct fy_msg *m, const char *name, uint32_t nlen);

/* Hides every field with this name. Returns how many were hidden. */
int fy_msg_remove(struct fy_msg *m, const char *name, uint32_t nlen);

/* Replaces all fields of this name with one (value referenced). Returns 0 or -1 (out of memory). */
int fy_msg_set(struct fy_msg *m, const char *name, uint32_t nlen, const char *value, uint32_t vlen);

/* Like fy_msg_set for a well-known field: matches by token, not by comparing names. */
int fy_msg_set_tok(struct fy_msg *m, enum fy_token tok, const char *name, uint32_t nlen,
                   const char *value, uint32_t vlen);

/* Hides hop-by-hop fields: the fixed set of tokens and every field named in Connection. */
void fy_msg_strip_hop_by_hop(struct fy_msg *m);

/* Bytes the visible fields take serialised as HTTP/1 field lines ("Name: value\r\n" each). */
size_t fy_msg_fields_size(const struct fy_msg *m);

/* Copies every string the message references into one block it owns (the kept block when it is
 * large enough and not in use). Returns 0 or -1. */
int fy_msg_own(struct fy_msg *m);

/* True if a comma-separated field value contains `tok` as a list element (any case). */
bool fy_list_has(const char *value, uint32_t vlen, const char *tok, uint32_t tlen);

/* A 101's Upgrade (RFC 9110 7.8): true when it names at least one protocol and each one it
 * names is among those the request's visible Upgrade fields offered. */
bool fy_msg_upgrade_offered(const struct fy_msg *req, const struct fy_msg *resp);

#endif
