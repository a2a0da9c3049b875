
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'dlq' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'dlq'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'dlq' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('topology', 'topology', [CompletionResultType]::ParameterValue, 'Plan, declare or verify each service''s queues, exchanges and bindings')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Ready and consumer counts of each service''s work, retry and error queues')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the messages of an error queue without removing them (order and content unchanged)')
            [CompletionResult]::new('peek', 'peek', [CompletionResultType]::ParameterValue, 'Show the message(s) at the head of a queue in full; with --pop, ask before removing each')
            [CompletionResult]::new('replay', 'replay', [CompletionResultType]::ParameterValue, 'Move matching messages back to the work queue (or --to Q); asks first')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Publish the JSONL records of FILE to a queue, with confirms; asks first')
            [CompletionResult]::new('purge', 'purge', [CompletionResultType]::ParameterValue, 'Remove every message of a queue; asks first; prints how many')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dlq;topology' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('plan', 'plan', [CompletionResultType]::ParameterValue, 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Compare the broker with the config without changing anything; drift exits 3')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dlq;topology;plan' {
            [CompletionResult]::new('--service', '--service', [CompletionResultType]::ParameterName, 'Only this service (repeatable); default: every service in the config')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;topology;apply' {
            [CompletionResult]::new('--service', '--service', [CompletionResultType]::ParameterName, 'Only this service (repeatable); default: every service in the config')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;topology;verify' {
            [CompletionResult]::new('--service', '--service', [CompletionResultType]::ParameterName, 'Only this service (repeatable); default: every service in the config')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;topology;help' {
            [CompletionResult]::new('plan', 'plan', [CompletionResultType]::ParameterValue, 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Compare the broker with the config without changing anything; drift exits 3')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dlq;topology;help;plan' {
            break
        }
        'dlq;topology;help;apply' {
            break
        }
        'dlq;topology;help;verify' {
            break
        }
        'dlq;topology;help;help' {
            break
        }
        'dlq;stats' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;list' {
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'Read this queue instead of a service''s error queue (needs no config file)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Look at the first N messages only [default: every message]; with --filter, fewer may be shown')
            [CompletionResult]::new('--filter', '--filter', [CompletionResultType]::ParameterName, 'Show only messages for which this jq expression is true, e.g. ''.body.tenant == "acme"'' (@FILE reads the expression from FILE)')
            [CompletionResult]::new('--group-by', '--group-by', [CompletionResultType]::ParameterName, 'Count messages per distinct value of this jq expression instead, e.g. .failure.message (@FILE reads it from FILE)')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;peek' {
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'Read this queue instead of a service''s error queue (needs no config file)')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'How many messages to show from the head of the queue')
            [CompletionResult]::new('--save', '--save', [CompletionResultType]::ParameterName, 'Append each removed message to FILE (JSONL, fsynced) before removing it')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('--pop', '--pop', [CompletionResultType]::ParameterName, 'After showing each message, ask whether to remove it (needs a terminal, or --yes)')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;replay' {
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'Read this queue instead of a service''s error queue (needs no config file)')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Send copies to this queue [default: the service''s work queue, else each message''s origin]')
            [CompletionResult]::new('--filter', '--filter', [CompletionResultType]::ParameterName, 'Replay only messages for which this jq expression is true, e.g. ''.body.tenant == "acme"'' (@FILE reads the expression from FILE)')
            [CompletionResult]::new('--transform', '--transform', [CompletionResultType]::ParameterName, 'Repair each matching message with this jq expression before it is published, e.g. ''.body.amount |= tonumber'' or ''.routing_key = "billing.v2"'' (its output is read as an import record; fields it leaves alone are published unchanged; @FILE reads it from FILE)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Replay at most N matching messages (with --filter, the first N that match)')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'At most N messages per second')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Show what would move, move nothing (needs no --yes)')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;export' {
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'Read this queue instead of a service''s error queue (needs no config file)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'JSONL file to append to (created when missing, never truncated)')
            [CompletionResult]::new('--filter', '--filter', [CompletionResultType]::ParameterName, 'Export only messages for which this jq expression is true (@FILE reads it from FILE)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Look at the first N messages only')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('--remove', '--remove', [CompletionResultType]::ParameterName, 'Remove each exported message from the queue once its line is on disk (asks first)')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;import' {
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'JSONL file written by `dlq export`, `dlq list -o jsonl` or `dlq peek --save`')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Queue to publish to (through the default exchange)')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;purge' {
            [CompletionResult]::new('--queue', '--queue', [CompletionResultType]::ParameterName, 'Read this queue instead of a service''s error queue (needs no config file)')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;completions' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'Broker URL; several comma-separated URLs are tried in order [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [default: ./dlq.toml]')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--management-url', '--management-url', [CompletionResultType]::ParameterName, 'Management HTTP API (topology verify; queue type and version checks of list and peek) [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Answer yes to confirmations (needed when stdin is not a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print only results and errors: no progress bars, notes or warnings')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Show the causes behind errors and more detail')
            [CompletionResult]::new('--no-color', '--no-color', [CompletionResultType]::ParameterName, 'Never use colour (also: env NO_COLOR); colour is only ever used on a terminal')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dlq;help' {
            [CompletionResult]::new('topology', 'topology', [CompletionResultType]::ParameterValue, 'Plan, declare or verify each service''s queues, exchanges and bindings')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Ready and consumer counts of each service''s work, retry and error queues')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the messages of an error queue without removing them (order and content unchanged)')
            [CompletionResult]::new('peek', 'peek', [CompletionResultType]::ParameterValue, 'Show the message(s) at the head of a queue in full; with --pop, ask before removing each')
            [CompletionResult]::new('replay', 'replay', [CompletionResultType]::ParameterValue, 'Move matching messages back to the work queue (or --to Q); asks first')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Publish the JSONL records of FILE to a queue, with confirms; asks first')
            [CompletionResult]::new('purge', 'purge', [CompletionResultType]::ParameterValue, 'Remove every message of a queue; asks first; prints how many')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dlq;help;topology' {
            [CompletionResult]::new('plan', 'plan', [CompletionResultType]::ParameterValue, 'Print the queues, exchanges, bindings and arguments the config derives (no broker needed)')
            [CompletionResult]::new('apply', 'apply', [CompletionResultType]::ParameterValue, 'Declare the topology; idempotent; never deletes or purges; conflicts exit 3')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Compare the broker with the config without changing anything; drift exits 3')
            break
        }
        'dlq;help;topology;plan' {
            break
        }
        'dlq;help;topology;apply' {
            break
        }
        'dlq;help;topology;verify' {
            break
        }
        'dlq;help;stats' {
            break
        }
        'dlq;help;list' {
            break
        }
        'dlq;help;peek' {
            break
        }
        'dlq;help;replay' {
            break
        }
        'dlq;help;export' {
            break
        }
        'dlq;help;import' {
            break
        }
        'dlq;help;purge' {
            break
        }
        'dlq;help;completions' {
            break
        }
        'dlq;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
