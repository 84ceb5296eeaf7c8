<?php
// A small PHP 8.2 app: uncaught exceptions (one with a previous exception), an Error, warnings, a notice and a
// deprecation. CLI: php app.php KIND N; under PHP-FPM: /app.php?kind=KIND&n=N
final class OrderRepository
{
    public function __construct(private ?PDO $db = null) {}

    public function find(int $id): array
    {
        try {
            $this->db = new PDO("pgsql:host=127.0.0.1;port=1;dbname=shop", "app", "x");
        } catch (PDOException $e) {
            throw new RuntimeException("cannot load order $id", 0, $e);
        }
        return [];
    }
}

function handle(string $kind, int $n): void
{
    switch ($kind) {
        case 'uncaught':
            throw new InvalidArgumentException("order id $n is not valid");
        case 'previous':
            (new OrderRepository())->find($n);
            break;
        case 'error':
            $user = null;
            echo $user->name();
            break;
        case 'warnings':
            $rows = ['a' => 1];
            echo $rows[$n + 4];                // Warning: Undefined array key
            echo $undefined;                   // Warning: Undefined variable
            $fh = fopen("/nonexistent/$n.csv", 'r');  // Warning: fopen(...)
            trigger_error("cache miss for key user:$n", E_USER_NOTICE);
            strlen(null);                      // Deprecated: passing null
            trigger_error("payment $n failed", E_USER_ERROR);
    }
}

if (PHP_SAPI === 'cli') {
    handle($argv[1], (int) $argv[2]);
} else {
    handle($_GET['kind'], (int) $_GET['n']);
}
