/* flywheel-engine - the model engine's command-line tool.
 *
 * Theory of operation
 * -------------------
 * main() only dispatches: argv[1] names a verb, the verb's row in s_verbs
 * (cli.h) parses the rest of argv against its option table and runs. Every
 * verb prints JSON results on stdout (one object a line), progress on
 * stderr, and exits 0 (ok), 1 (error: bad data, bad model, I/O) or 2
 * (usage). Agents run this binary inside task processes and read its stdout;
 * docs/engine-cli.md describes every verb (its option tables are printed by
 * `flywheel-engine --help-markdown`, from the same tables the parser uses).
 *
 * The engine library logs key=value lines (fw_log) to stderr as well; they
 * are progress, never results. FW_LOG_LEVEL=warn quiets them. */
#include "cli.h"

#include "fw_log.h"

#include <stdio.h>
#include <string.h>

static const fw_cli_verb *const s_verbs[] = {
    &fw_cli_verb_init,  &fw_cli_verb_tokenizer_train, &fw_cli_verb_tokenize,
    &fw_cli_verb_prepare, &fw_cli_verb_train,         &fw_cli_verb_eval,
    &fw_cli_verb_embed, &fw_cli_verb_generate,
};
#define S_NVERBS (sizeof s_verbs / sizeof s_verbs[0])

static void s_usage(FILE *f) {
    fprintf(f, "usage: flywheel-engine VERB [options]\n\n"
               "The model engine of Flywheel (GPT-2 family, CPU reference backend).\n\n"
               "verbs:\n");
    for (size_t i = 0; i < S_NVERBS; i++)
        fprintf(f, "  %-16s %s\n", s_verbs[i]->name, s_verbs[i]->summary);
    fprintf(f, "\n`flywheel-engine VERB --help` lists a verb's options.\n"
               "Results are JSON lines on stdout; progress and errors go to stderr.\n"
               "Exit status: 0 ok, 1 error, 2 usage error.\n");
}

int main(int argc, char **argv) {
    fw_log_set_name("engine");
    if (argc < 2) {
        s_usage(stderr);
        return FW_CLI_EXIT_USAGE;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "--help") == 0 || strcmp(verb, "-h") == 0 || strcmp(verb, "help") == 0) {
        if (argc > 2)
            for (size_t i = 0; i < S_NVERBS; i++)
                if (strcmp(argv[2], s_verbs[i]->name) == 0) {
                    fw_cli_print_verb_help(stdout, s_verbs[i]);
                    return FW_CLI_EXIT_OK;
                }
        s_usage(stdout);
        return FW_CLI_EXIT_OK;
    }
    if (strcmp(verb, "--help-markdown") == 0) {
        fw_cli_print_markdown(stdout, s_verbs, S_NVERBS);
        return FW_CLI_EXIT_OK;
    }
    for (size_t i = 0; i < S_NVERBS; i++) {
        if (strcmp(verb, s_verbs[i]->name) != 0) continue;
        fw_cli_set_verb(verb);
        int code;
        fw_cli_args *a = fw_cli_parse(s_verbs[i], argc - 1, argv + 1, &code);
        if (!a) return code;
        code = s_verbs[i]->run(a);
        fw_cli_args_destroy(&a);
        return code;
    }
    fprintf(stderr, "flywheel-engine: unknown verb \"%s\" (verbs: ", verb);
    for (size_t i = 0; i < S_NVERBS; i++)
        fprintf(stderr, "%s%s", i ? ", " : "", s_verbs[i]->name);
    fprintf(stderr, "; see flywheel-engine --help)\n");
    return FW_CLI_EXIT_USAGE;
}
