/* rprocd native helper: batched record I/O on SOCK_SEQPACKET sockets.
 *
 * Python's socket module has no recvmmsg(2)/sendmmsg(2).  These wrappers
 * keep the per-record semantics of recv/send (one record = one message):
 *
 * - rprocd_recvm: up to COUNT records into a caller-owned array of buffers
 *   of STRIDE bytes each.  FLAGS go to every recvmsg (MSG_PEEK with
 *   SO_PEEK_OFF peeks the next records without consuming them; MSG_TRUNC
 *   makes each length the record's real length, so an oversized record is
 *   seen, never silently cut).  End of file and an empty record both read
 *   0 bytes; they differ in that a record carries the SCM_CREDENTIALS
 *   control message of a socket with SO_PASSCRED set (net/core/scm.h
 *   scm_recv() puts it for every record received), while at end of file
 *   unix_dgram_recvmsg() returns before scm_recv() (net/unix/af_unix.c), so
 *   msg_controllen stays 0.  do_recvmmsg() (net/socket.c) counts an EOF
 *   read as a datagram and goes on, so the batch is cut at the first one.
 * - rprocd_sendm: COUNT records from a buffer array (lengths in LENS) in one
 *   sendmmsg; returns how many the kernel took.
 * - rprocd_sendm_rec: the same, after one aligned 16-bit store of VALUE at
 *   REC, made just before the system call; with LOWERED >= 0, a send the
 *   socket took only K of (0 on EAGAIN) then stores LOWERED + K there.  REC is vring0's avail.used_event
 *   in the shared window (rprocd/vring.py UsedRecord; memory.py checked its
 *   alignment and range): the record that the run is accepted.  A SIGKILL
 *   between that record and the hand-over loses the run; here the two are a
 *   few instructions apart, and a kill during sendmmsg lets it complete
 *   (signals are acted on at the return to user space).  The one store into
 *   the window outside memory.py and its helper.
 *
 * Both return a count >= 0 or -errno; nothing here allocates.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define MAXBATCH 64
#define CTRL 64 /* CMSG_SPACE(sizeof(struct ucred)) is 32 on LP64 */

int rprocd_sockio_abi(void)
{
	return 3;
}

int rprocd_recvm(int fd, char *bufs, int stride, int count, int flags, int *lens, int *eof)
{
	struct mmsghdr mm[MAXBATCH];
	struct iovec iov[MAXBATCH];
	char ctrl[MAXBATCH][CTRL];
	int i, n;

	*eof = 0;
	if (count > MAXBATCH)
		count = MAXBATCH;
	if (count <= 0)
		return 0;
	memset(mm, 0, sizeof(mm[0]) * count);
	for (i = 0; i < count; i++) {
		iov[i].iov_base = bufs ? bufs + (long)i * stride : NULL;
		iov[i].iov_len = bufs ? (size_t)stride : 0;
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_control = ctrl[i];
		mm[i].msg_hdr.msg_controllen = CTRL;
	}
	n = recvmmsg(fd, mm, count, flags | MSG_DONTWAIT, NULL);
	if (n < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		if (mm[i].msg_len == 0 && mm[i].msg_hdr.msg_controllen == 0) {
			*eof = 1;
			return i;
		}
		lens[i] = (int)mm[i].msg_len;
	}
	return n;
}

static int sendm(int fd, const char *bufs, int stride, int count, const int *lens, volatile uint16_t *rec, int value,
		 int lowered)
{
	struct mmsghdr mm[MAXBATCH];
	struct iovec iov[MAXBATCH];
	int i, n;

	if (count > MAXBATCH)
		count = MAXBATCH;
	if (count <= 0) {
		if (rec)
			*rec = (uint16_t)value;
		return 0;
	}
	memset(mm, 0, sizeof(mm[0]) * count);
	for (i = 0; i < count; i++) {
		iov[i].iov_base = (void *)(bufs + (long)i * stride);
		iov[i].iov_len = (size_t)lens[i];
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	if (rec)
		*rec = (uint16_t)value;
	n = sendmmsg(fd, mm, count, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0)
		n = -errno;
	if (rec && lowered >= 0 && n < count)
		*rec = (uint16_t)(lowered + (n > 0 ? n : 0));
	return n;
}

int rprocd_sendm(int fd, const char *bufs, int stride, int count, const int *lens)
{
	return sendm(fd, bufs, stride, count, lens, 0, 0, -1);
}

int rprocd_sendm_rec(int fd, const char *bufs, int stride, int count, const int *lens, uint16_t *rec, int value,
		     int lowered)
{
	return sendm(fd, bufs, stride, count, lens, rec, value, lowered);
}
