
use builtin;
use str;

set edit:completion:arg-completer[dlq] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'dlq'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'dlq'= {
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand topology 'Plan, declare or verify each service''s queues, exchanges and bindings'
            cand stats 'Ready and consumer counts of each service''s work, retry and error queues'
            cand list 'List the messages of an error queue without removing them (order and content unchanged)'
            cand peek 'Show the message(s) at the head of a queue in full; with --pop, ask before removing each'
            cand replay 'Move matching messages back to the work queue (or --to Q); asks first'
            cand export 'Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced'
            cand import 'Publish the JSONL records of FILE to a queue, with confirms; asks first'
            cand purge 'Remove every message of a queue; asks first; prints how many'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dlq;topology'= {
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand plan 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)'
            cand apply 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3'
            cand verify 'Compare the broker with the config without changing anything; drift exits 3'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dlq;topology;plan'= {
            cand --service 'Only this service (repeatable); default: every service in the config'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;topology;apply'= {
            cand --service 'Only this service (repeatable); default: every service in the config'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;topology;verify'= {
            cand --service 'Only this service (repeatable); default: every service in the config'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;topology;help'= {
            cand plan 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)'
            cand apply 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3'
            cand verify 'Compare the broker with the config without changing anything; drift exits 3'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dlq;topology;help;plan'= {
        }
        &'dlq;topology;help;apply'= {
        }
        &'dlq;topology;help;verify'= {
        }
        &'dlq;topology;help;help'= {
        }
        &'dlq;stats'= {
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;list'= {
            cand --queue 'Read this queue instead of a service''s error queue (needs no config file)'
            cand --limit 'Look at the first N messages only [default: every message]; with --filter, fewer may be shown'
            cand --filter 'Show only messages for which this jq expression is true, e.g. ''.body.tenant == "acme"'' (@FILE reads the expression from FILE)'
            cand --group-by 'Count messages per distinct value of this jq expression instead, e.g. .failure.message (@FILE reads it from FILE)'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;peek'= {
            cand --queue 'Read this queue instead of a service''s error queue (needs no config file)'
            cand --count 'How many messages to show from the head of the queue'
            cand --save 'Append each removed message to FILE (JSONL, fsynced) before removing it'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand --pop 'After showing each message, ask whether to remove it (needs a terminal, or --yes)'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;replay'= {
            cand --queue 'Read this queue instead of a service''s error queue (needs no config file)'
            cand --to 'Send copies to this queue [default: the service''s work queue, else each message''s origin]'
            cand --filter 'Replay only messages for which this jq expression is true, e.g. ''.body.tenant == "acme"'' (@FILE reads the expression from FILE)'
            cand --transform 'Repair each matching message with this jq expression before it is published, e.g. ''.body.amount |= tonumber'' or ''.routing_key = "billing.v2"'' (its output is read as an import record; fields it leaves alone are published unchanged; @FILE reads it from FILE)'
            cand --limit 'Replay at most N matching messages (with --filter, the first N that match)'
            cand --rate 'At most N messages per second'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand --dry-run 'Show what would move, move nothing (needs no --yes)'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;export'= {
            cand --queue 'Read this queue instead of a service''s error queue (needs no config file)'
            cand --file 'JSONL file to append to (created when missing, never truncated)'
            cand --filter 'Export only messages for which this jq expression is true (@FILE reads it from FILE)'
            cand --limit 'Look at the first N messages only'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand --remove 'Remove each exported message from the queue once its line is on disk (asks first)'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;import'= {
            cand --file 'JSONL file written by `dlq export`, `dlq list -o jsonl` or `dlq peek --save`'
            cand --to 'Queue to publish to (through the default exchange)'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;purge'= {
            cand --queue 'Read this queue instead of a service''s error queue (needs no config file)'
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;completions'= {
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]'
            cand -y 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand --yes 'Answer yes to confirmations (needed when stdin is not a terminal)'
            cand -q 'Print only results and errors: no progress bars, notes or warnings'
            cand --quiet 'Print only results and errors: no progress bars, notes or warnings'
            cand -v 'Show the causes behind errors and more detail'
            cand --verbose 'Show the causes behind errors and more detail'
            cand --no-color 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dlq;help'= {
            cand topology 'Plan, declare or verify each service''s queues, exchanges and bindings'
            cand stats 'Ready and consumer counts of each service''s work, retry and error queues'
            cand list 'List the messages of an error queue without removing them (order and content unchanged)'
            cand peek 'Show the message(s) at the head of a queue in full; with --pop, ask before removing each'
            cand replay 'Move matching messages back to the work queue (or --to Q); asks first'
            cand export 'Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced'
            cand import 'Publish the JSONL records of FILE to a queue, with confirms; asks first'
            cand purge 'Remove every message of a queue; asks first; prints how many'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dlq;help;topology'= {
            cand plan 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)'
            cand apply 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3'
            cand verify 'Compare the broker with the config without changing anything; drift exits 3'
        }
        &'dlq;help;topology;plan'= {
        }
        &'dlq;help;topology;apply'= {
        }
        &'dlq;help;topology;verify'= {
        }
        &'dlq;help;stats'= {
        }
        &'dlq;help;list'= {
        }
        &'dlq;help;peek'= {
        }
        &'dlq;help;replay'= {
        }
        &'dlq;help;export'= {
        }
        &'dlq;help;import'= {
        }
        &'dlq;help;purge'= {
        }
        &'dlq;help;completions'= {
        }
        &'dlq;help;help'= {
        }
    ]
    $completions[$command]
}
