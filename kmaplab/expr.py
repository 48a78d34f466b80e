"""The `checks` of a scenario's [expect]: a small safe expression language.

    kmap_high_calls >= 1024 * cpus
    global_flushes >= (1024 * cpus) // (pkmap + 1) and ipis_sent == 0
    write_path == "kmap" or not sleep_in_atomic_bugs
    min(a, b) <= abs(c - d)

Allowed: names (counters, boot options, the variant's keys), integer,
float, boolean and string constants, + - * / // % and ** (exponent 0..64),
unary - + not, comparisons (== != < <= > >=, chained), and / or, and the
functions min, max, abs.  Anything else (attributes, subscripts, lambdas,
comprehensions, other calls ...) is refused when the scenario is loaded
(ExprError, one line).  Evaluation never calls Python's eval: it walks the
checked tree, and every arithmetic result must stay within +-2**64 (a
bigger one, a division by zero, a missing name or an operation on the
wrong types is an ExprError at run time, reported as the check's failure).
So a check always finishes, in time linear in its length.
"""
import ast
import operator

LIMIT = 1 << 64
MAX_LEN = 1000
FUNCS = {'min': min, 'max': max, 'abs': abs}
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
          ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
          ast.Pow: operator.pow}
CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
          ast.Gt: operator.gt, ast.GtE: operator.ge}
ALLOWED = ('names, numbers, strings, + - * / // % **, comparisons, and/or/not, min/max/abs')


class ExprError(ValueError):
    """A check that cannot be compiled or evaluated: str() is one line."""


def compile_check(text):
    """The checked syntax tree of a check expression, or ExprError."""
    if not isinstance(text, str):
        raise ExprError(f'{text!r} is not a string')
    if len(text) > MAX_LEN:
        raise ExprError(f'longer than {MAX_LEN} characters')
    try:
        tree = ast.parse(text.strip(), mode='eval')
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ExprError(f'{text!r} is not a valid expression') from None
    _check(tree.body, text, 0)
    for node in ast.walk(tree.body):          # constant parts: their errors are load-time errors
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Call, ast.Compare)) \
                and not any(isinstance(n, ast.Name) for n in ast.walk(node)):
            evaluate(node, {}, text)
    return tree.body


def _check(node, text, depth):
    if depth > 50:
        raise ExprError(f'{text!r}: nested too deeply')
    bad = None
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool)) or node.value is None:
            bad = f'constant {node.value!r}'
    elif isinstance(node, ast.Name):
        pass
    elif isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, text, depth + 1)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            bad = type(node.op).__name__
        _check(node.operand, text, depth + 1)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in BINOPS:
            bad = f'operator {type(node.op).__name__}'
        _check(node.left, text, depth + 1)
        _check(node.right, text, depth + 1)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in CMPOPS:
                bad = f'comparison {type(op).__name__}'
        _check(node.left, text, depth + 1)
        for c in node.comparators:
            _check(c, text, depth + 1)
    elif isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in FUNCS) or node.keywords \
                or not node.args:
            bad = 'a call other than min(...), max(...), abs(...)'
        for a in node.args:
            if isinstance(a, ast.Starred):
                bad = '*args'
            _check(a, text, depth + 1)
    else:
        bad = type(node).__name__.lower()
    if bad:
        raise ExprError(f'{text!r}: {bad} is not allowed (allowed: {ALLOWED})')


def _num(v, text):
    if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > LIMIT:
        raise ExprError(f'{text!r}: a result beyond 2**64')
    return v


def evaluate(node, env, text='check'):
    """The value of a compiled check in env (name -> value); ExprError on a
    missing name, a division by zero, a result beyond 2**64 or wrong types."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ExprError(f'{text!r}: name {node.id!r} is not defined')
        return env[node.id]
    if isinstance(node, ast.BoolOp):
        result = None
        for v in node.values:
            result = evaluate(v, env, text)
            if isinstance(node.op, ast.And) and not result or isinstance(node.op, ast.Or) and result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        v = evaluate(node.operand, env, text)
        if isinstance(node.op, ast.Not):
            return not v
        _operands(text, v)
        return _num(-v if isinstance(node.op, ast.USub) else +v, text)
    if isinstance(node, ast.BinOp):
        a, b = evaluate(node.left, env, text), evaluate(node.right, env, text)
        _operands(text, a, b)
        if isinstance(node.op, ast.Pow):
            if not (isinstance(b, int) and 0 <= b <= 64) or abs(a) > LIMIT:
                raise ExprError(f'{text!r}: ** needs an exponent from 0 to 64')
        try:
            return _num(BINOPS[type(node.op)](a, b), text)
        except ZeroDivisionError:
            raise ExprError(f'{text!r}: division by zero') from None
        except OverflowError:
            raise ExprError(f'{text!r}: a result beyond 2**64') from None
    if isinstance(node, ast.Compare):
        left = evaluate(node.left, env, text)
        for op, c in zip(node.ops, node.comparators):
            right = evaluate(c, env, text)
            if type(op) not in (ast.Eq, ast.NotEq):
                _comparable(text, left, right)
            if not CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        args = [evaluate(a, env, text) for a in node.args]
        _operands(text, *args)
        if node.func.id == 'abs' and len(args) != 1:
            raise ExprError(f'{text!r}: abs takes one argument')
        return FUNCS[node.func.id](*args) if len(args) > 1 or node.func.id == 'abs' else args[0]
    raise ExprError(f'{text!r}: cannot evaluate')


def _operands(text, *values):
    for v in values:
        if not isinstance(v, (int, float)):
            raise ExprError(f'{text!r}: {v!r} is not a number')


def _comparable(text, a, b):
    if isinstance(a, str) != isinstance(b, str):
        raise ExprError(f'{text!r}: cannot order {a!r} and {b!r}')
