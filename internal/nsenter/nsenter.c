// Enter namespaces before the Go runtime starts.
//
// setns(CLONE_NEWNS) fails with EINVAL in a multi-threaded process, and a Go
// program has several threads before main.main runs. A C constructor runs
// earlier, while the process still has a single thread, so a tether binary
// re-executed with _TETHER_NSENTER set joins the listed namespaces here and
// the Go code then starts inside them.
//
//   _TETHER_NSENTER=net=/path,uts=/path,mnt=/path   any subset, any order
//   _TETHER_NSENTER_ERRFD=N                          optional: also report errors on fd N
//
// All files are opened first (while paths still resolve in the original
// mount namespace), then joined in the order net, uts, mnt. On success both
// variables are removed from the environment. On failure a line
// "tether-nsenter: ..." goes to stderr (and to the error fd) and the process
// exits with status 125 (TETHER_NSENTER_EXIT) without running any Go code.
//
// Never make a binary containing this setuid: it trusts its environment.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TETHER_NSENTER_ENV "_TETHER_NSENTER"
#define TETHER_NSENTER_ERRFD_ENV "_TETHER_NSENTER_ERRFD"
#define TETHER_NSENTER_EXIT 125

struct tether_ns {
	const char *key;
	int flag;
	const char *path;
	int fd;
};

static void tether_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static void tether_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void tether_fail(const char *fmt, ...)
{
	char msg[1024];
	size_t len;
	va_list ap;
	const char *errfd;

	len = (size_t)snprintf(msg, sizeof(msg), "tether-nsenter: ");
	va_start(ap, fmt);
	vsnprintf(msg + len, sizeof(msg) - len - 1, fmt, ap);
	va_end(ap);
	len = strlen(msg);
	msg[len++] = '\n';

	tether_write_all(2, msg, len);
	errfd = getenv(TETHER_NSENTER_ERRFD_ENV);
	if (errfd != NULL && *errfd != '\0') {
		char *end;
		long fd = strtol(errfd, &end, 10);
		if (*end == '\0' && fd > 2 && fd < 1024)
			tether_write_all((int)fd, msg, len);
	}
	_exit(TETHER_NSENTER_EXIT);
}

__attribute__((constructor)) static void tether_nsenter(void)
{
	struct tether_ns ns[] = {
		{"net", CLONE_NEWNET, NULL, -1},
		{"uts", CLONE_NEWUTS, NULL, -1},
		{"mnt", CLONE_NEWNS, NULL, -1},
	};
	const size_t nns = sizeof(ns) / sizeof(ns[0]);
	const char *env = getenv(TETHER_NSENTER_ENV);
	char *spec, *tok, *save = NULL;
	size_t i;

	if (env == NULL)
		return;
	if (*env == '\0')
		tether_fail("%s is empty", TETHER_NSENTER_ENV);
	spec = strdup(env);
	if (spec == NULL)
		tether_fail("out of memory");

	for (tok = strtok_r(spec, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (eq == NULL || eq[1] == '\0')
			tether_fail("bad entry %s in %s: want kind=/path", tok, TETHER_NSENTER_ENV);
		*eq = '\0';
		for (i = 0; i < nns; i++)
			if (strcmp(tok, ns[i].key) == 0)
				break;
		if (i == nns)
			tether_fail("unknown namespace kind %s in %s (want net, uts or mnt)", tok, TETHER_NSENTER_ENV);
		if (ns[i].path != NULL)
			tether_fail("namespace kind %s given twice in %s", tok, TETHER_NSENTER_ENV);
		ns[i].path = eq + 1;
	}

	for (i = 0; i < nns; i++) {
		if (ns[i].path == NULL)
			continue;
		ns[i].fd = open(ns[i].path, O_RDONLY | O_CLOEXEC);
		if (ns[i].fd < 0)
			tether_fail("open %s namespace %s: %s", ns[i].key, ns[i].path, strerror(errno));
	}
	for (i = 0; i < nns; i++) {
		if (ns[i].fd < 0)
			continue;
		if (setns(ns[i].fd, ns[i].flag) < 0)
			tether_fail("enter %s namespace %s: setns: %s", ns[i].key, ns[i].path, strerror(errno));
		close(ns[i].fd);
	}

	free(spec);
	unsetenv(TETHER_NSENTER_ENV);
	unsetenv(TETHER_NSENTER_ERRFD_ENV);
}
