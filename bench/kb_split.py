"""The CMRC 2018 evaluation split used by bench/kb.py (and only there).

Each paragraph goes by the SHA-256 of its id: even -> tuning half, odd -> validation half, so no
paragraph and none of its questions is in both. Within each half, a paragraph whose hash (divided
by 2) is a multiple of 4 is left out of the knowledge base: its questions are out-of-KB questions
about things the knowledge base does not hold (often a neighbour of something it does hold: a
different fish of the same genus, another station of the same line), which makes refusal a
real test. Nothing about the split depends on the questions or on retrieval results.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "cmrc2018"
if not DATA.exists():
    DATA = Path("/work/shared/data/cmrc2018")

# Questions about things absent from the corpus, written for the first benchmark; reported
# besides the held-out paragraphs' questions (never used for tuning).
OUT_OF_KB = [
    "2022年卡塔尔世界杯的冠军是哪个国家？", "ChatGPT是哪家公司在2022年发布的？", "特斯拉Model Y的续航里程是多少公里？",
    "华为Mate 60手机使用的是什么芯片？", "煤矿井下瓦斯浓度超过多少必须停止作业？", "自救器的有效防护时间一般是多少分钟？",
    "皮带输送机检修前需要执行什么挂牌制度？", "新冠疫苗第一针和第二针的间隔是多少天？", "比特币的总量上限是多少枚？",
    "北京大兴国际机场是哪一年正式通航的？", "杭州亚运会的吉祥物叫什么名字？", "天问一号探测器在火星哪个区域着陆？",
    "嫦娥五号带回了多少克月球样品？", "港珠澳大桥的全长是多少公里？", "微信支付是在哪一年上线的？",
    "抖音的母公司是哪家企业？", "东京奥运会推迟到哪一年举行？", "詹姆斯·韦布空间望远镜的主镜直径是多少米？",
    "量子计算机九章是由哪所大学研制的？", "深圳地铁14号线的终点站是哪里？", "Python 3.12版本引入了哪些新语法？",
    "大型语言模型的参数量通常用什么单位衡量？", "液氮的沸点是多少摄氏度？", "锂电池热失控的主要原因有哪些？",
    "光伏组件的转换效率一般在什么范围？", "矿用本安型设备的防爆标志是什么？", "井下避难硐室的额定防护时间是多少小时？",
    "综采工作面液压支架的初撑力应达到多少？", "掘进机截割头的转速一般是多少？", "矿井主要通风机的备用风机多久切换一次？",
    "瓦斯抽采泵站的安全距离要求是什么？", "冲击地压的预警指标有哪些？", "矿灯的连续照明时间不得少于多少小时？",
    "井下带式输送机的防跑偏装置如何调整？", "煤尘爆炸的下限浓度是多少？", "防突钻孔的深度一般是多少米？",
    "透水事故发生前有哪些征兆？", "采空区自然发火的预防措施有哪些？", "井下人员定位系统的精度要求是多少米？",
    "矿山救护队到达事故矿井的时间要求是多少分钟？", "2023年诺贝尔文学奖得主是谁？", "梅西在哪一年第一次获得世界杯冠军？",
    "中国空间站天和核心舱是哪一年发射的？", "雄安新区设立于哪一年？", "复兴号动车组的最高运营速度是多少？",
    "小米汽车SU7的发布时间是什么时候？", "元宇宙这个概念最早出自哪部小说？", "电动汽车充电桩的国标接口有几种？",
    "5G网络的理论峰值速率是多少？", "北斗三号全球卫星导航系统何时建成？", "淘宝双十一在2019年的成交额是多少？",
    "人工智能AlphaGo在哪一年击败了李世石？", "SpaceX星舰第一次轨道试飞是在哪一年？", "核酸检测的Ct值代表什么意思？",
    "碳达峰碳中和的目标年份分别是哪一年？", "长江十年禁渔从哪一年开始实施？", "冬奥会吉祥物冰墩墩的原型是什么动物？",
    "国产大飞机C919的首次商业飞航是哪一年？", "TikTok在美国的用户数量是多少？", "高铁列车上禁止携带哪些物品？",
]

INVENTED = ["星澜泽", "霁川", "奥维斯塔", "默林岗", "苍翎", "泽拉诺", "叶孚", "岚橙", "科莫雷", "昭沐"]


def split(paragraph_id: str) -> tuple[str, bool]:
    """("tune" or "val", whether the paragraph is in the knowledge base)."""
    h = int(hashlib.sha256(paragraph_id.encode()).hexdigest(), 16)
    return ("tune" if h % 2 == 0 else "val"), (h // 2) % 4 != 0


def load_data() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").open(encoding="utf-8")]
    return corpus, queries


def perturbed(queries: list[dict[str, Any]], corpus: dict[str, dict[str, Any]], rng: random.Random) -> list[str]:
    """Validation-half in-KB questions whose subject (the paragraph's title) is swapped for an
    invented name: about something the knowledge base has never heard of."""
    out = []
    for q in queries:
        half, in_kb = split(q["doc_id"])
        title = corpus[q["doc_id"]]["title"]
        if half == "val" and in_kb and len(title) >= 2 and title in q["question"]:
            out.append(q["question"].replace(title, rng.choice(INVENTED)))
    return out
