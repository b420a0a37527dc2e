/* flywheelctl - the cluster admin CLI.
 *
 * Not built yet: this placeholder only answers --help and refuses to run, so
 * that nothing pretends to work before its issue lands. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: flywheelctl [options]\n\nthe cluster admin CLI of Flywheel.\n"
               "Not implemented yet in this build; see docs/architecture.md.\n");
        return 0;
    }
    fprintf(stderr, "flywheelctl: not implemented yet in this build (see docs/architecture.md)\n");
    return 2;
}
