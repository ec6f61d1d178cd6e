"""The list of markets the sim trades: codes, names, listing times, liquidity, warnings.

The catalog is a pure function of ``(seed, now)``: well-known coins are written out (their codes
and names never change with the seed); the rest are synthesized from Hangul/Latin syllables with
a fixed generator, so codes are stable across seeds too. Listing times, liquidity, price levels
and ``market_event`` flags depend on the seed; listing times are spread between Upbit's launch
and ``now`` (a few markets are listed within the last days before ``now``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ._clock import MS_PER_DAY, MS_PER_MINUTE, dt_to_ms

LAUNCH_MS = dt_to_ms("2017-09-25T00:00:00Z")
CAUTION_KEYS = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)

# symbol, Korean name, English name, rough KRW price in 2026. Order = rough liquidity rank.
_KNOWN: tuple[tuple[str, str, str, float], ...] = (
    ("BTC", "비트코인", "Bitcoin", 140_000_000),
    ("XRP", "엑스알피(리플)", "XRP", 3_100),
    ("ETH", "이더리움", "Ethereum", 5_200_000),
    ("SOL", "솔라나", "Solana", 240_000),
    ("DOGE", "도지코인", "Dogecoin", 330),
    ("USDT", "테더", "Tether", 1_400),
    ("ADA", "에이다", "Cardano", 1_050),
    ("SUI", "수이", "Sui", 4_800),
    ("TRX", "트론", "TRON", 450),
    ("LINK", "체인링크", "Chainlink", 26_000),
    ("AVAX", "아발란체", "Avalanche", 33_000),
    ("PEPE", "페페", "Pepe", 0.016),
    ("SHIB", "시바이누", "Shiba Inu", 0.019),
    ("HBAR", "헤데라", "Hedera", 300),
    ("ONDO", "온도파이낸스", "Ondo Finance", 1_300),
    ("ENA", "에테나", "Ethena", 800),
    ("ETC", "이더리움클래식", "Ethereum Classic", 29_000),
    ("BCH", "비트코인캐시", "Bitcoin Cash", 750_000),
    ("XLM", "스텔라루멘", "Stellar Lumens", 480),
    ("SEI", "세이", "Sei", 400),
    ("DOT", "폴카닷", "Polkadot", 5_500),
    ("NEAR", "니어프로토콜", "NEAR Protocol", 3_600),
    ("APT", "앱토스", "Aptos", 6_800),
    ("ARB", "아비트럼", "Arbitrum", 600),
    ("POL", "폴리곤 에코시스템 토큰", "POL (ex-MATIC)", 330),
    ("SAND", "샌드박스", "The Sandbox", 400),
    ("MANA", "디센트럴랜드", "Decentraland", 420),
    ("AXS", "엑시인피니티", "Axie Infinity", 3_500),
    ("ATOM", "코스모스", "Cosmos", 6_500),
    ("EOS", "이오스", "EOS", 900),
    ("NEO", "네오", "NEO", 9_000),
    ("QTUM", "퀀텀", "Qtum", 3_300),
    ("BTG", "비트코인골드", "Bitcoin Gold", 1_500),
    ("WAVES", "웨이브", "Waves", 1_600),
    ("ICX", "아이콘", "ICON", 190),
    ("STX", "스택스", "Stacks", 1_000),
    ("AAVE", "에이브", "Aave", 420_000),
    ("UNI", "유니스왑", "Uniswap", 14_000),
    ("ALGO", "알고랜드", "Algorand", 370),
    ("FIL", "파일코인", "Filecoin", 3_700),
    ("THETA", "쎄타토큰", "Theta Token", 1_100),
    ("VET", "비체인", "VeChain", 35),
    ("XTZ", "테조스", "Tezos", 1_000),
    ("ZIL", "질리카", "Zilliqa", 17),
    ("ONT", "온톨로지", "Ontology", 230),
    ("IOST", "아이오에스티", "IOST", 6),
    ("STEEM", "스팀", "Steem", 230),
    ("HIVE", "하이브", "Hive", 330),
    ("IMX", "이뮤터블엑스", "Immutable X", 800),
    ("GRT", "더그래프", "The Graph", 130),
    ("CHZ", "칠리즈", "Chiliz", 60),
    ("ENS", "이더리움네임서비스", "Ethereum Name Service", 30_000),
    ("MASK", "마스크네트워크", "Mask Network", 1_600),
    ("BLUR", "블러", "Blur", 130),
    ("BONK", "봉크", "Bonk", 0.03),
    ("TRUMP", "오피셜트럼프", "Official Trump", 12_000),
    ("WLD", "월드코인", "Worldcoin", 1_500),
    ("JUP", "주피터", "Jupiter", 650),
    ("BAT", "베이직어텐션토큰", "Basic Attention Token", 220),
    ("ZRX", "제로엑스", "0x", 300),
    ("SNT", "스테이터스네트워크토큰", "Status Network Token", 35),
    ("ANKR", "앵커", "Ankr", 25),
    ("USDC", "유에스디코인", "USD Coin", 1_400),
)

# Codes that existed once and are gone: the model knows them, the API answers 404.
DELISTED: tuple[str, ...] = ("KRW-LUNA", "KRW-WEMIX", "KRW-XEM", "BTC-LUNA", "USDT-WEMIX")

_SYLLABLES = (
    ("ra", "라"), ("on", "온"), ("ve", "베"), ("su", "수"), ("ko", "코"), ("ti", "티"),
    ("ni", "니"), ("lo", "로"), ("mi", "미"), ("ka", "카"), ("ze", "제"), ("bu", "부"),
    ("da", "다"), ("pi", "피"), ("gu", "구"), ("ho", "호"), ("sa", "사"), ("to", "토"),
    ("ne", "네"), ("ri", "리"), ("mo", "모"), ("ba", "바"), ("xi", "시"), ("ru", "루"),
)
_SUFFIXES = (("", ""), (" Coin", "코인"), (" Protocol", "프로토콜"), (" Network", "네트워크"),
             (" Chain", "체인"), (" Finance", "파이낸스"), (" AI", "에이아이"))

N_KRW, N_BTC, N_USDT = 210, 60, 40
N_LIQUID = 20  # the first N_LIQUID KRW markets trade almost every second

# Trades per minute (mean, before the intraday profile) by liquidity rank for the liquid set.
_LIQUID_RATES = (50.0, 45.0, 40.0, 35.0, 30.0, 30.0) + (15.0,) * (N_LIQUID - 6)


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """What the model knows about one market (served or delisted)."""

    code: str  # QUOTE-BASE, e.g. KRW-BTC
    korean_name: str
    english_name: str
    mid: int  # stable numeric id for the RNG (crc32 of the code)
    listing_ms: int  # first instant trades may happen
    price_at_listing: float  # in quote units
    price_2026: float  # in quote units; the long-run level the walk drifts towards
    sigma_day: float  # daily log-volatility
    rate_per_min: float  # mean trades per minute (before intraday profile and day activity)
    trade_value: float  # mean value of one trade, in quote units
    warning: bool
    caution: tuple[bool, bool, bool, bool, bool]
    served: bool = True

    @property
    def quote(self) -> str:
        return self.code.split("-", 1)[0]


def _synth_names(n: int, taken: set[str]) -> list[tuple[str, str, str]]:
    """``n`` made-up (symbol, korean, english) triples; a fixed generator keeps them stable."""
    rng = np.random.default_rng(20171025)
    out: list[tuple[str, str, str]] = []
    while len(out) < n:
        k = int(rng.integers(2, 4))
        picks = [_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), k)]
        latin = "".join(p[0] for p in picks)
        symbol = latin.upper()[: int(rng.integers(3, 6))]
        if symbol in taken:
            continue
        taken.add(symbol)
        suffix = _SUFFIXES[int(rng.integers(0, len(_SUFFIXES)))]
        english = latin.capitalize() + suffix[0]
        korean = "".join(p[1] for p in picks) + suffix[1]
        out.append((symbol, korean, english))
    return out


def build_catalog(seed: int, now_ms: int) -> dict[str, MarketInfo]:
    """All markets (served and delisted) keyed by code; deterministic in ``(seed, now_ms)``."""
    rng = np.random.default_rng([seed, 1])
    known = {s: (k, e, p) for s, k, e, p in _KNOWN}
    synth = _synth_names(N_KRW + 20, set(known) | {"LUNA", "WEMIX", "XEM"})
    symbols = [s for s, *_ in _KNOWN if s != "USDC"] + ["USDC"]
    krw_syms = symbols + [s for s, _, _ in synth][: N_KRW - len(symbols)]
    names = dict(known)
    for s, k, e in synth:
        names[s] = (k, e, float(np.exp(rng.uniform(np.log(2.0), np.log(50_000.0)))))
    # BTC and USDT books list the well-known coins first, then some synthesized ones.
    # A coin worth a few won would sit at the 1-satoshi tick in BTC: Upbit does not list those.
    pricey = [s for s in krw_syms if names[s][2] >= 50.0 and s not in ("BTC", "USDT", "USDC")]
    btc_syms = [s for s in pricey if s in known][: N_BTC - 15]
    btc_syms += [s for s in pricey if s not in known][: N_BTC - len(btc_syms)]
    usdt_syms = [s for s in symbols if s not in ("USDT", "USDC")][: N_USDT - 5]
    usdt_syms += [s for s in krw_syms[len(symbols):]][5 : 5 + N_USDT - len(usdt_syms)]

    codes = [f"KRW-{s}" for s in krw_syms] + [f"BTC-{s}" for s in btc_syms]
    codes += [f"USDT-{s}" for s in usdt_syms]
    recent = set(rng.choice(np.arange(N_LIQUID + 40, len(codes)), size=4, replace=False).tolist())
    flagged = rng.choice(np.arange(N_LIQUID, len(codes)), size=12, replace=False).tolist()
    latest_ms = now_ms - 30 * MS_PER_DAY
    catalog: dict[str, MarketInfo] = {}
    btc_krw = known["BTC"][2]
    for i, code in enumerate(codes + list(DELISTED)):
        quote, base = code.split("-")
        served = i < len(codes)
        r = np.random.default_rng([seed, 2, zlib.crc32(code.encode())])
        if base in ("BTC", "ETH") and quote == "KRW":
            listing = LAUNCH_MS
        elif i < 60 and quote == "KRW":  # the well-known KRW book opened in Upbit's first month
            listing = LAUNCH_MS + int(r.integers(0, 30 * 24 * 60)) * MS_PER_MINUTE
        elif i in recent:  # listed in the last days before now: short histories
            listing = now_ms - int(r.integers(12 * 60, 4 * 24 * 60)) * MS_PER_MINUTE
        else:
            span = max(latest_ms - LAUNCH_MS, MS_PER_DAY)
            listing = LAUNCH_MS + int(r.uniform(0.05, 1.0) * span) // MS_PER_MINUTE * MS_PER_MINUTE
        korean, english, krw_price = names.get(base, ("루나", "Terra", 300.0))
        divisor = {"KRW": 1.0, "BTC": btc_krw, "USDT": 1_400.0}[quote]
        level = krw_price / divisor
        # Well-known coins grew a lot since their listing; others wander around their level.
        growth = float(np.exp(r.uniform(1.0, 3.5))) if base in known and i < 60 else 1.0
        if code == "KRW-BTC":
            growth = level / 4_400_000.0
        elif code == "KRW-ETH":
            growth = level / 330_000.0
        if base in ("USDT", "USDC"):
            growth, sigma = 1.0, 0.003
        else:
            sigma = float(r.uniform(0.025, 0.035) if base == "BTC" else r.uniform(0.035, 0.08))
        if quote == "KRW" and i < N_LIQUID:
            rate = _LIQUID_RATES[i]
        elif quote == "KRW" and i < 60 or code in ("USDT-BTC", "BTC-ETH", "BTC-XRP", "USDT-ETH"):
            rate = float(r.uniform(1.0, 8.0))
        else:  # thin books: many minutes without a single trade
            rate = float(np.exp(r.uniform(np.log(0.01), np.log(0.6))))
        value = {"KRW": 300_000.0, "BTC": 0.004, "USDT": 200.0}[quote] * float(r.uniform(0.4, 1.6))
        caution = tuple(bool(x) for x in (r.random(5) < 0.3)) if i in flagged else (False,) * 5
        catalog[code] = MarketInfo(
            code=code,
            korean_name=korean,
            english_name=english,
            mid=zlib.crc32(code.encode()),
            listing_ms=int(listing),
            price_at_listing=level / growth,
            price_2026=level,
            sigma_day=sigma,
            rate_per_min=rate,
            trade_value=value,
            warning=bool(i in flagged[:3]),
            caution=caution,  # type: ignore[arg-type]
            served=served,
        )
    return catalog
