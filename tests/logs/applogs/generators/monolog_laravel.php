<?php
// Monolog 2.9 (Debian's php-monolog) configured as Laravel 9/10 configures its "single"/"daily" channel:
// a StreamHandler with LineFormatter(null, null, true, true) and includeStacktraces(); Laravel logs an
// exception as error($e->getMessage(), ['exception' => $e]). Usage: php monolog_laravel.php N >> FILE
// With "json" after N: Monolog's JsonFormatter with includeStacktraces(), as Laravel's and Symfony's JSON logging (a
// container's stdout) configure it: one JSON object a line, the exception normalized in context.exception (class,
// message, code, file, trace, previous). Usage: php monolog_laravel.php N json >> FILE
require '/usr/share/php/Monolog/autoload.php';

use Monolog\Formatter\JsonFormatter;
use Monolog\Formatter\LineFormatter;
use Monolog\Handler\StreamHandler;
use Monolog\Logger;

$handler = new StreamHandler('php://stdout', Logger::DEBUG);
$formatter = ($argv[2] ?? '') === 'json' ? new JsonFormatter() : new LineFormatter(null, 'Y-m-d H:i:s', true, true);
$formatter->includeStacktraces();
$handler->setFormatter($formatter);
$log = new Logger('production', [$handler]);

final class OrderService
{
    public function load(int $id): void
    {
        try {
            throw new PDOException("SQLSTATE[08006] [7] connection to server at \"10.0.0.$id\", port 5432 failed: Connection refused");
        } catch (PDOException $e) {
            throw new RuntimeException("cannot load order $id", 0, $e);
        }
    }
}

$n = (int) $argv[1];
$log->info("GET /orders/$n", ['user' => 100 + $n]);
try {
    (new OrderService())->load($n);
} catch (Throwable $e) {
    $log->error($e->getMessage(), ['exception' => $e]);
}
try {
    intdiv(10, $n - $n);
} catch (DivisionByZeroError $e) {
    $log->critical($e->getMessage(), ['exception' => $e, 'order' => $n]);
}
$log->warning("slow request " . (800 + $n) . " ms");
