/* flywheel-engine - the model engine CLI.
 *
 * Not built yet: this placeholder only answers --help and refuses to run, so
 * that nothing pretends to work before its issue lands. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: flywheel-engine [options]\n\nthe model engine CLI of Flywheel.\n"
               "Not implemented yet in this build; see docs/architecture.md.\n");
        return 0;
    }
    fprintf(stderr, "flywheel-engine: not implemented yet in this build (see docs/architecture.md)\n");
    return 2;
}
