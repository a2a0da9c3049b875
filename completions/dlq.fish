# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_dlq_global_optspecs
    string join \n url= c/config= o/output= y/yes q/quiet v/verbose no-color management-url= h/help V/version
end

function __fish_dlq_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_dlq_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_dlq_using_subcommand
    set -l cmd (__fish_dlq_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c dlq -n "__fish_dlq_needs_command" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_needs_command" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_needs_command" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_needs_command" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_needs_command" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_needs_command" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_needs_command" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_needs_command" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_needs_command" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "topology" -d 'Plan, declare or verify each service\'s queues, exchanges and bindings'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "stats" -d 'Ready and consumer counts of each service\'s work, retry and error queues'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "list" -d 'List the messages of an error queue without removing them (order and content unchanged)'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "peek" -d 'Show the message(s) at the head of a queue in full; with --pop, ask before removing each'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "replay" -d 'Move matching messages back to the work queue (or --to Q); asks first'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "export" -d 'Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "import" -d 'Publish the JSONL records of FILE to a queue, with confirms; asks first'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "purge" -d 'Remove every message of a queue; asks first; prints how many'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c dlq -n "__fish_dlq_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -f -a "plan" -d 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -f -a "apply" -d 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -f -a "verify" -d 'Compare the broker with the config without changing anything; drift exits 3'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and not __fish_seen_subcommand_from plan apply verify help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -l service -d 'Only this service (repeatable); default: every service in the config' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from plan" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -l service -d 'Only this service (repeatable); default: every service in the config' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from apply" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -l service -d 'Only this service (repeatable); default: every service in the config' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "plan" -d 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "apply" -d 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Compare the broker with the config without changing anything; drift exits 3'
complete -c dlq -n "__fish_dlq_using_subcommand topology; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dlq -n "__fish_dlq_using_subcommand stats" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand stats" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand stats" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand stats" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand list" -l queue -d 'Read this queue instead of a service\'s error queue (needs no config file)' -r
complete -c dlq -n "__fish_dlq_using_subcommand list" -l limit -d 'Look at the first N messages only [default: every message]; with --filter, fewer may be shown' -r
complete -c dlq -n "__fish_dlq_using_subcommand list" -l filter -d 'Show only messages for which this jq expression is true, e.g. \'.body.tenant == "acme"\' (@FILE reads the expression from FILE)' -r
complete -c dlq -n "__fish_dlq_using_subcommand list" -l group-by -d 'Count messages per distinct value of this jq expression instead, e.g. .failure.message (@FILE reads it from FILE)' -r
complete -c dlq -n "__fish_dlq_using_subcommand list" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand list" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand list" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand list" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand list" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand list" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand list" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand list" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand list" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l queue -d 'Read this queue instead of a service\'s error queue (needs no config file)' -r
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l count -d 'How many messages to show from the head of the queue' -r
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l save -d 'Append each removed message to FILE (JSONL, fsynced) before removing it' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l pop -d 'After showing each message, ask whether to remove it (needs a terminal, or --yes)'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand peek" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l queue -d 'Read this queue instead of a service\'s error queue (needs no config file)' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l to -d 'Send copies to this queue [default: the service\'s work queue, else each message\'s origin]' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l filter -d 'Replay only messages for which this jq expression is true, e.g. \'.body.tenant == "acme"\' (@FILE reads the expression from FILE)' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l transform -d 'Repair each matching message with this jq expression before it is published, e.g. \'.body.amount |= tonumber\' or \'.routing_key = "billing.v2"\' (its output is read as an import record; fields it leaves alone are published unchanged; @FILE reads it from FILE)' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l limit -d 'Replay at most N matching messages (with --filter, the first N that match)' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l rate -d 'At most N messages per second' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l dry-run -d 'Show what would move, move nothing (needs no --yes)'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand replay" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand export" -l queue -d 'Read this queue instead of a service\'s error queue (needs no config file)' -r
complete -c dlq -n "__fish_dlq_using_subcommand export" -l file -d 'JSONL file to append to (created when missing, never truncated)' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand export" -l filter -d 'Export only messages for which this jq expression is true (@FILE reads it from FILE)' -r
complete -c dlq -n "__fish_dlq_using_subcommand export" -l limit -d 'Look at the first N messages only' -r
complete -c dlq -n "__fish_dlq_using_subcommand export" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand export" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand export" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand export" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand export" -l remove -d 'Remove each exported message from the queue once its line is on disk (asks first)'
complete -c dlq -n "__fish_dlq_using_subcommand export" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand export" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand export" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand export" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand export" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand import" -l file -d 'JSONL file written by `dlq export`, `dlq list -o jsonl` or `dlq peek --save`' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand import" -l to -d 'Queue to publish to (through the default exchange)' -r
complete -c dlq -n "__fish_dlq_using_subcommand import" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand import" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand import" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand import" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand import" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand import" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand import" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand import" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand import" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand purge" -l queue -d 'Read this queue instead of a service\'s error queue (needs no config file)' -r
complete -c dlq -n "__fish_dlq_using_subcommand purge" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand purge" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand purge" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand purge" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand completions" -l url -d 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]' -r
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s c -l config -d 'Config file [default: ./dlq.toml]' -r -F
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s o -l output -d 'Output format' -r -f -a "table\t'Human-readable tables'
json\t'One JSON document'
jsonl\t'One JSON object per line'"
complete -c dlq -n "__fish_dlq_using_subcommand completions" -l management-url -d 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]' -r
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s y -l yes -d 'Answer yes to confirmations (needed when stdin is not a terminal)'
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s q -l quiet -d 'Print only results and errors: no progress bars, notes or warnings'
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s v -l verbose -d 'Show the causes behind errors and more detail'
complete -c dlq -n "__fish_dlq_using_subcommand completions" -l no-color -d 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dlq -n "__fish_dlq_using_subcommand completions" -s V -l version -d 'Print version'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "topology" -d 'Plan, declare or verify each service\'s queues, exchanges and bindings'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "stats" -d 'Ready and consumer counts of each service\'s work, retry and error queues'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "list" -d 'List the messages of an error queue without removing them (order and content unchanged)'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "peek" -d 'Show the message(s) at the head of a queue in full; with --pop, ask before removing each'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "replay" -d 'Move matching messages back to the work queue (or --to Q); asks first'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "export" -d 'Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "import" -d 'Publish the JSONL records of FILE to a queue, with confirms; asks first'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "purge" -d 'Remove every message of a queue; asks first; prints how many'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c dlq -n "__fish_dlq_using_subcommand help; and not __fish_seen_subcommand_from topology stats list peek replay export import purge completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dlq -n "__fish_dlq_using_subcommand help; and __fish_seen_subcommand_from topology" -f -a "plan" -d 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)'
complete -c dlq -n "__fish_dlq_using_subcommand help; and __fish_seen_subcommand_from topology" -f -a "apply" -d 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3'
complete -c dlq -n "__fish_dlq_using_subcommand help; and __fish_seen_subcommand_from topology" -f -a "verify" -d 'Compare the broker with the config without changing anything; drift exits 3'
