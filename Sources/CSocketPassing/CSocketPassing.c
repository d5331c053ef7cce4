#include "CSocketPassing.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BINDU_MAX_FDS 253

int bindu_send_fds(int socket, const void *data, size_t length, const int *fds, int count) {
  if (count < 0 || count > BINDU_MAX_FDS || length == 0) {
    errno = EINVAL;
    return -1;
  }
  union {
    char buffer[CMSG_SPACE(sizeof(int) * BINDU_MAX_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct iovec iov = {.iov_base = (void *)data, .iov_len = length};
  struct msghdr message = {0};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  if (count > 0) {
    message.msg_control = control.buffer;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
    memcpy(CMSG_DATA(header), fds, sizeof(int) * (size_t)count);
  }
  ssize_t sent;
  do {
    sent = sendmsg(socket, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return -1;
  if ((size_t)sent != length) {
    errno = EMSGSIZE;
    return -1;
  }
  return 0;
}

ssize_t bindu_receive_fds(int socket, void *buffer, size_t capacity, int *fds, int max_fds, int *count) {
  union {
    char buffer[CMSG_SPACE(sizeof(int) * BINDU_MAX_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct iovec iov = {.iov_base = buffer, .iov_len = capacity};
  struct msghdr message = {0};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control.buffer;
  message.msg_controllen = sizeof(control.buffer);
  ssize_t received;
  do {
    received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  *count = 0;
  if (received < 0) return -1;
  int truncated = (message.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *given = (int *)CMSG_DATA(header);
    for (size_t i = 0; i < n; i++) {
      if (*count < max_fds) {
        fds[(*count)++] = given[i];
      } else {
        close(given[i]);
      }
    }
  }
  if (truncated) {
    for (int i = 0; i < *count; i++) close(fds[i]);
    *count = 0;
    errno = EMSGSIZE;
    return -1;
  }
  return received;
}
