package redis_proxy

// commandKind is how a command is split (Envoy's command handlers).
type commandKind int

const (
	simple      commandKind = iota // one key, the first argument
	eval                           // EVAL script numkeys key …: the first key, the third argument
	sumKeys                        // one request per key, the integer replies summed
	mget                           // one GET per key, the replies in an array
	mset                           // one SET per key-value pair, OK when all are
	transaction                    // MULTI, EXEC, DISCARD (session.transaction)
)

// command is a supported command with its stats.
type command struct {
	name string
	kind commandKind
	st   commandStats
}

// simpleCommands hash to one server by their first argument: Envoy's
// SupportedCommands::simpleCommands.
var simpleCommands = []string{
	"append", "bf.add", "bf.card", "bf.exists", "bf.info", "bf.insert", "bf.loadchunk", "bf.madd", "bf.mexists",
	"bf.reserve", "bf.scandump", "bitcount", "bitfield", "bitpos", "decr", "decrby", "dump", "expire", "expireat",
	"geoadd", "geodist", "geohash", "geopos", "georadius_ro", "georadiusbymember_ro", "get", "getbit", "getdel",
	"getrange", "getset", "hdel", "hexists", "hget", "hgetall", "hincrby", "hincrbyfloat", "hkeys", "hlen", "hmget",
	"hmset", "hscan", "hset", "hsetnx", "hstrlen", "hvals", "incr", "incrby", "incrbyfloat", "lindex", "linsert",
	"llen", "lmove", "lpop", "lpush", "lpushx", "lrange", "lrem", "lset", "ltrim", "persist", "pexpire", "pexpireat",
	"pfadd", "pfcount", "psetex", "pttl", "publish", "restore", "rpop", "rpush", "rpushx", "sadd", "scard", "set",
	"setbit", "setex", "setnx", "setrange", "sismember", "smembers", "spop", "srandmember", "srem", "sscan", "strlen",
	"ttl", "type", "watch", "xack", "xadd", "xautoclaim", "xclaim", "xdel", "xlen", "xpending", "xrange", "xrevrange",
	"xtrim", "zadd", "zcard", "zcount", "zincrby", "zlexcount", "zpopmin", "zpopmax", "zrange", "zrangebylex",
	"zrangebyscore", "zrank", "zrem", "zremrangebylex", "zremrangebyrank", "zremrangebyscore", "zrevrange",
	"zrevrangebylex", "zrevrangebyscore", "zrevrank", "zscan", "zscore",
}

// writeCommands change data (Envoy's SupportedCommands::writeCommands):
// every other command is a read, for read_command_policy and a mirror's
// exclude_read_commands.
var writeCommands = map[string]bool{}

func init() {
	for _, c := range []string{"append", "bitfield", "decr", "decrby", "del", "discard", "exec", "expire", "expireat",
		"eval", "evalsha", "geoadd", "getdel", "hdel", "hincrby", "hincrbyfloat", "hmset", "hset", "hsetnx", "incr",
		"incrby", "incrbyfloat", "linsert", "lmove", "lpop", "lpush", "lpushx", "lrem", "lset", "ltrim", "mset", "multi",
		"persist", "pexpire", "pexpireat", "pfadd", "psetex", "restore", "rpop", "rpush", "rpushx", "sadd", "set",
		"setbit", "setex", "setnx", "setrange", "spop", "srem", "zadd", "zincrby", "touch", "zpopmin", "zpopmax", "zrem",
		"zremrangebylex", "zremrangebyrank", "zremrangebyscore", "unlink"} {
		writeCommands[c] = true
	}
}

func isRead(cmd string) bool { return !writeCommands[cmd] }
