
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
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dlq;topology'= {
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
            cand --url 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]'
            cand -c 'Config file [default: ./dlq.toml]'
            cand --config 'Config file [default: ./dlq.toml]'
            cand -o 'Output format'
            cand --output 'Output format'
            cand --management-url 'Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]'
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
        &'dlq;help;completions'= {
        }
        &'dlq;help;help'= {
        }
    ]
    $completions[$command]
}
