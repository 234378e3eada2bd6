/*
 * nmeter for the busybox test image: Debian's busybox is built without this
 * applet, and the suite's container lifecycle specs read the time with
 * milliseconds as `nmeter -d0 '%3t' | head -n1`. This is the part of busybox's
 * nmeter they use: -d MSEC between lines (default 1000) and a format of text
 * and %[N]t (time of day with N decimals, 0 to 6). Anything else is refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int line(const char *fmt)
{
	struct timeval tv;
	struct tm tm;
	const char *p;

	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	for (p = fmt; *p; p++) {
		int n = 0;

		if (*p != '%') {
			putchar(*p);
			continue;
		}
		p++;
		if (*p >= '0' && *p <= '6')
			n = *p++ - '0';
		if (*p != 't') {
			fprintf(stderr, "nmeter: only %%[N]t is supported, not %%%c\n", *p ? *p : ' ');
			return -1;
		}
		printf("%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
		if (n > 0) {
			char frac[8];

			snprintf(frac, sizeof(frac), "%06ld", (long)tv.tv_usec);
			printf(".%.*s", n, frac);
		}
	}
	putchar('\n');
	return fflush(stdout) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	long delay = 1000;
	int c;

	while ((c = getopt(argc, argv, "d:")) != -1) {
		if (c != 'd') {
			fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT\n");
			return 1;
		}
		delay = strtol(optarg, NULL, 10);
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: nmeter [-d MSEC] FORMAT\n");
		return 1;
	}
	for (;;) {
		if (line(argv[optind]) != 0)
			return 1;
		if (delay > 0)
			usleep(delay * 1000);
	}
}
