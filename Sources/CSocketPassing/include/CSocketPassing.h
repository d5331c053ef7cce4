#ifndef C_SOCKET_PASSING_H
#define C_SOCKET_PASSING_H

#include <stddef.h>
#include <sys/types.h>

/// Sends `length` bytes of `data` and the descriptors `fds` (SCM_RIGHTS) in one message on the
/// Unix stream socket `socket`. Returns 0, or -1 with errno set.
int bindu_send_fds(int socket, const void *data, size_t length, const int *fds, int count);

/// Receives one message sent by bindu_send_fds: up to `capacity` bytes into `buffer` and up to
/// `max_fds` descriptors into `fds` (their number in `*count`). Returns the bytes read (0: the
/// peer closed), or -1 with errno set. Descriptors beyond `max_fds` are closed.
ssize_t bindu_receive_fds(int socket, void *buffer, size_t capacity, int *fds, int max_fds, int *count);

#endif
