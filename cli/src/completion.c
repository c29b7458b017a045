/* completion.c — prewarmctl completion bash: a bash completion script for nouns, verbs, flags,
 * flag values, and function and host names (asked of the server with -o names). */
#include "cli.h"

#include "cmd.h"

#include <stdio.h>
#include <string.h>

static const char completion_help[] =
    "usage: prewarmctl completion bash\n"
    "\n"
    "Prints a bash completion script. Load it with\n"
    "  source <(prewarmctl completion bash)\n"
    "or save it as ~/.local/share/bash-completion/completions/prewarmctl.\n";

static const char bash_script[] =
    "# bash completion for prewarmctl (prewarmctl completion bash)\n"
    "_prewarmctl() {\n"
    "    local cur prev noun='' verb='' i w\n"
    "    local -a conn=()\n"
    "    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
    "    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
    "    local valued='-o --output --server --token --timeout --image --memory-mb --vcpus --policy --min --max "
    "--keepalive --quantile --clouds --regions --zones --max-host-share --max-zone-share --file --interval'\n"
    "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
    "        w=\"${COMP_WORDS[i]}\"\n"
    "        if [[ \" $valued \" == *\" $w \"* ]]; then\n"
    "            [[ $w == --server || $w == --token ]] && conn+=(\"$w\" \"${COMP_WORDS[i+1]}\")\n"
    "            ((i++))\n"
    "            continue\n"
    "        fi\n"
    "        [[ $w == -* ]] && continue\n"
    "        if [[ -z $noun ]]; then noun=$w; elif [[ -z $verb ]]; then verb=$w; fi\n"
    "    done\n"
    "    case \"$prev\" in\n"
    "        -o|--output) COMPREPLY=($(compgen -W 'table json names' -- \"$cur\")); return ;;\n"
    "        --policy) COMPREPLY=($(compgen -W 'fixed keepalive predictive' -- \"$cur\")); return ;;\n"
    "        --file) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
    "        --server|--token|--timeout|--image|--memory-mb|--vcpus|--min|--max|--keepalive|--quantile|--clouds|"
    "--regions|--zones|--max-host-share|--max-zone-share|--interval) return ;;\n"
    "    esac\n"
    "    local common='-o --output --server --token --timeout -h --help'\n"
    "    if [[ $cur == -* ]]; then\n"
    "        local flags=$common\n"
    "        case \"$noun $verb\" in\n"
    "            'functions put') flags+=' --image --memory-mb --vcpus --policy --min --max --keepalive --quantile "
    "--clouds --regions --zones --max-host-share --max-zone-share --file' ;;\n"
    "            'pool set') flags+=' --policy --min --max --keepalive --quantile' ;;\n"
    "            'top '*) flags+=' --interval --once' ;;\n"
    "            'model train'|'models train') flags+=' --activate --wait' ;;\n"
    "        esac\n"
    "        COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\"))\n"
    "        return\n"
    "    fi\n"
    "    if [[ -z $noun ]]; then\n"
    "        COMPREPLY=($(compgen -W 'functions pool hosts forecast model top completion help' -- \"$cur\"))\n"
    "        return\n"
    "    fi\n"
    "    if [[ -z $verb ]]; then\n"
    "        case \"$noun\" in\n"
    "            functions|function) COMPREPLY=($(compgen -W 'list get put delete' -- \"$cur\")) ;;\n"
    "            pool|pools) COMPREPLY=($(compgen -W 'get set' -- \"$cur\")) ;;\n"
    "            hosts|host) COMPREPLY=($(compgen -W 'list get drain undrain' -- \"$cur\")) ;;\n"
    "            forecast|forecasts) COMPREPLY=($(compgen -W 'get' -- \"$cur\")) ;;\n"
    "            model|models) COMPREPLY=($(compgen -W 'list get train activate' -- \"$cur\")) ;;\n"
    "            completion) COMPREPLY=($(compgen -W 'bash' -- \"$cur\")) ;;\n"
    "        esac\n"
    "        return\n"
    "    fi\n"
    "    local names=''\n"
    "    case \"$noun $verb\" in\n"
    "        'functions get'|'functions put'|'functions delete'|'function '*|'pool '*|'pools '*|'forecast '*|"
    "'forecasts '*)\n"
    "            names=$(\"${COMP_WORDS[0]}\" \"${conn[@]}\" --timeout 2 functions list -o names 2>/dev/null) ;;\n"
    "        'hosts get'|'hosts drain'|'hosts undrain'|'host '*)\n"
    "            names=$(\"${COMP_WORDS[0]}\" \"${conn[@]}\" --timeout 2 hosts list -o names 2>/dev/null) ;;\n"
    "        'model get'|'model activate'|'models get'|'models activate')\n"
    "            names=$(\"${COMP_WORDS[0]}\" \"${conn[@]}\" --timeout 2 model list -o names 2>/dev/null) ;;\n"
    "    esac\n"
    "    COMPREPLY=($(compgen -W \"$names\" -- \"$cur\"))\n"
    "}\n"
    "complete -F _prewarmctl prewarmctl\n";

int pw_cmd_completion(struct pw_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {PW_CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int o, rv = PW_CLI_OK;
    optind = 0;
    int r = pw_cli_next_opt(c, argc, argv, opts, completion_help, &o, &rv);
    if (r < 0)
        return rv;
    if ((rv = pw_cli_args(c, argc, argv, 1, 1, "shell (bash)")) != PW_CLI_OK)
        return rv;
    if (strcmp(argv[optind], "bash") != 0)
        return pw_cli_usage(c, "unsupported shell '%s' (only bash)", argv[optind]);
    fputs(bash_script, stdout);
    return PW_CLI_OK;
}
