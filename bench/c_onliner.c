/* The floor for any user-space onliner: a C loop that writes "online" to each block its
 * kernel `add` uevent names, and nothing else (no policy, no zone choice, no checks,
 * no metrics). A reference for bench/vm_online.py (onliner "c"), never a product.
 * It runs only in a test guest: it refuses to start unless the kernel command line
 * carries the vm tests' marker, like tests/vm/guest_probe.py.
 *
 * Usage: c_onliner READY_FILE   (written once the uevent socket is bound)
 */
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MARKER "hotplugd.vmtest=1"
#define ADD "add@/devices/system/memory/memory"

static int has_marker(void) {
    char cmdline[4096];
    FILE *f = fopen("/proc/cmdline", "r");
    size_t n = f ? fread(cmdline, 1, sizeof cmdline - 1, f) : 0;
    if (f) fclose(f);
    cmdline[n] = 0;
    for (char *word = strtok(cmdline, " \n"); word; word = strtok(NULL, " \n"))
        if (!strcmp(word, MARKER)) return 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: c_onliner READY_FILE\n");
        return 2;
    }
    if (!has_marker()) {
        fprintf(stderr, "c_onliner: %s is not on the kernel command line: refusing to run\n", MARKER);
        return 2;
    }
    int sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    int size = 32 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    struct sockaddr_nl self = {.nl_family = AF_NETLINK, .nl_groups = 1};
    if (sock < 0 || bind(sock, (struct sockaddr *)&self, sizeof self)) {
        perror("c_onliner: uevent socket");
        return 1;
    }
    FILE *ready = fopen(argv[1], "w");
    if (!ready) {
        perror(argv[1]);
        return 1;
    }
    fprintf(ready, "%d\n", (int)getpid());
    fclose(ready);
    char buf[8193], path[128];
    for (;;) {
        struct sockaddr_nl sender;
        struct iovec iov = {buf, sizeof buf - 1};
        struct msghdr msg = {.msg_name = &sender, .msg_namelen = sizeof sender, .msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n = recvmsg(sock, &msg, 0);
        if (n <= 0 || sender.nl_pid != 0) continue;
        buf[n] = 0;
        if (strncmp(buf, ADD, sizeof ADD - 1)) continue;
        char *digits = buf + sizeof ADD - 1, *end;
        long index = strtol(digits, &end, 10);
        if (end == digits || *end || index < 0) continue;
        snprintf(path, sizeof path, "/sys/devices/system/memory/memory%ld/state", index);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) continue;
        if (write(fd, "online", 6) < 0) { /* already online, or gone */ }
        close(fd);
    }
}
