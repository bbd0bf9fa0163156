"""Write `data/huatuo_fixture.jsonl`: ~300 synthetic Chinese medical Q&A rows in the Huatuo-26M test-set schema.

Every row is generated here from hand-written building blocks (no third-party text). The rows carry the
quirks of the real set on purpose, so that notebooks 01–03 have something to find and clean: exact
duplicates, a question asked twice with different answers, leading/trailing whitespace, empty template
questions ("患者性别:患者年龄:问题描述:", also with only sex and age filled in), a few answers thousands of characters long, mixed half-/full-width
punctuation. Answers share one doctor's style (greeting, analysis, advice, closing), which a fine-tuned
model can visibly pick up.

Synthetic demo data, not medical advice. Deterministic: `python data/make_fixture.py` always writes the same file.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20230822  # the walkthrough's date; any fixed number would do
N_REGULAR = 268
OUT = Path(__file__).resolve().parent / "huatuo_fixture.jsonl"
EMPTY_TEMPLATE = "患者性别:患者年龄:问题描述:"


@dataclass(frozen=True)
class Topic:
    """One complaint: how patients describe it, what the doctor thinks, what the doctor advises."""

    name: str
    symptoms: tuple[str, ...]
    analysis: tuple[str, ...]
    advice: tuple[str, ...]


TOPICS = (
    Topic("高血压", ("体检时血压是145/95", "最近量血压总在140、90左右", "早上起来头晕，量了血压150/100", "献血时被告知血压偏高"),
          ("血压已经超过正常范围，属于高血压一级的可能性大", "偶尔一次血压偏高可能与紧张、休息不好有关，需要多次测量才能确诊"),
          ("连续一周每天早晚各测一次血压并记录", "低盐饮食，每天食盐不超过5克", "戒烟限酒，保持规律作息", "如果多次测量都在140/90以上，到心内科就诊，在医生指导下用药")),
    Topic("感冒发烧", ("发烧38.5度，浑身没劲", "嗓子疼、流鼻涕两天了", "感冒一周了还在咳嗽", "昨晚开始发烧怕冷"),
          ("考虑是上呼吸道感染，多数由病毒引起", "属于普通感冒，一般一周左右可以自愈"),
          ("多喝温水，注意休息", "体温超过38.5度可以服用退烧药", "不要自行服用抗生素", "如果高烧持续三天不退，及时到医院查血常规")),
    Topic("咳嗽", ("咳嗽两周了，有黄痰", "晚上躺下就干咳", "感冒好了以后一直咳嗽", "咳嗽的时候胸口疼"),
          ("考虑是支气管炎的可能", "可能是感冒后咳嗽，气道还处于敏感状态"),
          ("拍个胸片排除肺部感染", "避免吸烟和油烟刺激", "可以在医生指导下用止咳化痰药", "咳嗽超过三周要到呼吸科就诊")),
    Topic("胃痛", ("吃完饭胃胀、反酸", "空腹的时候胃疼", "胃疼好几天了，还有点恶心", "经常打嗝，胃里烧得慌"),
          ("考虑是慢性胃炎或者功能性消化不良", "空腹痛要警惕十二指肠溃疡的可能"),
          ("饮食规律，少吃辛辣油腻", "不要空腹喝浓茶和咖啡", "可以做个胃镜和幽门螺杆菌检查", "在医生指导下服用抑酸药物")),
    Topic("失眠", ("晚上躺两个小时都睡不着", "半夜总是醒，醒了就睡不着", "最近工作压力大，天天失眠", "早上四点就醒了"),
          ("属于失眠，多与精神压力和作息不规律有关", "早醒有时和情绪低落有关，需要关注心理状态"),
          ("每天固定时间上床和起床", "睡前一小时不看手机", "下午以后不喝浓茶、咖啡", "长期失眠可以到睡眠门诊评估")),
    Topic("头痛", ("两边太阳穴胀痛", "一熬夜就头疼", "头痛还伴有恶心", "后脑勺一阵一阵地疼"),
          ("考虑是紧张性头痛的可能性大", "偏头痛也可能伴有恶心、怕光"),
          ("保证睡眠，避免长时间低头看手机", "疼痛明显时可以短期服用止痛药", "记录头痛发作的时间和诱因", "如果头痛突然加重或伴有呕吐，立即就医")),
    Topic("腰痛", ("弯腰搬东西以后腰疼", "腰疼还往腿上放射", "久坐以后腰酸", "早上起床腰僵硬"),
          ("考虑是腰肌劳损", "腰痛伴腿麻要考虑腰椎间盘突出的可能"),
          ("避免久坐和弯腰提重物", "睡硬一点的床垫", "可以做腰椎核磁共振明确诊断", "急性期卧床休息，可以局部热敷")),
    Topic("湿疹", ("手上起了很多小水泡，很痒", "小腿上一片红疹，越抓越多", "孩子脸上反复起红疙瘩", "一到冬天皮肤就干痒脱皮"),
          ("考虑是湿疹", "皮肤干燥引起的瘙痒也比较常见"),
          ("避免搔抓和热水烫洗", "洗澡后及时涂保湿霜", "可以在医生指导下外用激素药膏", "到皮肤科就诊明确诊断")),
    Topic("痤疮", ("脸上一直长痘，还有脓包", "额头和下巴长了很多闭口", "经期前下巴爆痘", "背上也长痘"),
          ("属于痤疮，和皮脂分泌旺盛、毛囊堵塞有关", "经期前长痘与激素水平变化有关"),
          ("每天用温和的洗面奶洗脸", "不要用手挤痘", "少吃甜食和油炸食品", "严重时到皮肤科在医生指导下用药")),
    Topic("糖尿病", ("空腹血糖7.2", "体检发现血糖偏高", "口渴、尿多，体重还下降了", "餐后两小时血糖11"),
          ("血糖已经达到糖尿病的诊断标准，需要复查确认", "空腹血糖偏高，要警惕糖尿病前期"),
          ("到内分泌科做糖耐量试验", "控制主食量，少吃甜食", "每周运动不少于150分钟", "定期监测血糖并记录")),
    Topic("月经不调", ("月经推迟了十几天", "月经量越来越少", "两个月没来月经了", "经期肚子疼得厉害"),
          ("月经不调多与内分泌紊乱、精神压力有关", "痛经多数属于原发性痛经"),
          ("先排除怀孕", "可以做个妇科B超和性激素检查", "注意保暖，避免生冷饮食", "疼痛明显时可以服用止痛药")),
    Topic("小儿腹泻", ("孩子一岁，拉肚子三天了", "宝宝大便稀，一天五六次", "孩子吃坏了东西，又吐又拉", "宝宝大便有奶瓣"),
          ("考虑是小儿腹泻，秋冬季多由轮状病毒引起", "可能是消化不良引起的"),
          ("注意补液，预防脱水", "可以服用口服补液盐", "暂时减少油腻辅食", "如果孩子精神差、尿少，及时就医")),
    Topic("小儿发烧", ("孩子发烧39度", "宝宝反复发烧两天", "孩子发烧还起了皮疹", "孩子晚上发烧白天好"),
          ("小儿发热最常见的原因是病毒感染", "发热伴皮疹要注意幼儿急疹等疾病"),
          ("体温超过38.5度可以用儿童退烧药", "多喝水，穿着不要太厚", "观察孩子精神状态", "如果出现抽搐或精神萎靡，立即就医")),
    Topic("便秘", ("三四天才排一次大便", "大便干硬，排便很费劲", "老人长期便秘", "产后一直便秘"),
          ("属于功能性便秘的可能性大", "便秘与饮食中纤维素少、饮水少、运动少有关"),
          ("多吃蔬菜水果和粗粮", "每天喝够水", "养成定时排便的习惯", "不要长期依赖泻药")),
    Topic("口腔溃疡", ("嘴里长了好几个溃疡，吃饭疼", "口腔溃疡反反复复", "舌头边上长了个白点", "溃疡两周都不好"),
          ("考虑是复发性口腔溃疡", "口腔溃疡和熬夜、上火、维生素缺乏有关"),
          ("保持口腔清洁", "少吃辛辣刺激食物", "可以局部用溃疡贴", "溃疡超过两周不愈合，要到口腔科检查")),
    Topic("过敏性鼻炎", ("早上起来一直打喷嚏流清鼻涕", "一到春天鼻子就痒", "鼻塞，晚上睡不好", "接触猫以后就打喷嚏"),
          ("考虑是过敏性鼻炎", "症状和接触过敏原有关"),
          ("尽量避开过敏原", "可以用生理盐水洗鼻", "在医生指导下使用鼻喷激素", "可以做过敏原检测")),
    Topic("颈椎病", ("脖子僵硬，转头困难", "低头久了手发麻", "颈椎疼还头晕", "肩膀和脖子一起酸疼"),
          ("考虑是颈椎病或颈部肌肉劳损", "手麻要考虑神经根受压"),
          ("避免长时间低头", "枕头高度要合适", "可以做颈椎核磁共振", "在康复科医生指导下做颈部锻炼")),
    Topic("脂肪肝", ("体检B超显示轻度脂肪肝", "转氨酶偏高，有脂肪肝", "不喝酒也查出了脂肪肝", "中度脂肪肝要吃药吗"),
          ("脂肪肝多与肥胖、饮食油腻和缺乏运动有关", "转氨酶升高说明肝细胞有损伤"),
          ("控制体重，每周减重不超过1公斤", "少吃油炸和高糖食物", "坚持有氧运动", "三到六个月后复查肝功能和B超")),
    Topic("尿路感染", ("尿频尿急，还有点疼", "小便的时候烧灼感", "尿检白细胞偏高", "憋尿以后小肚子疼"),
          ("考虑是尿路感染", "女性尿道短，比较容易发生尿路感染"),
          ("多喝水，不要憋尿", "做尿常规检查", "在医生指导下使用抗生素", "注意个人卫生")),
    Topic("扁桃体炎", ("嗓子疼，扁桃体肿大", "扁桃体上有白点，发烧", "每年都要犯好几次扁桃体炎", "吞咽的时候很疼"),
          ("考虑是急性扁桃体炎", "反复发作的属于慢性扁桃体炎"),
          ("多喝水，吃清淡流质的食物", "查血常规判断是细菌还是病毒感染", "细菌感染需要在医生指导下用抗生素", "一年发作多次可以咨询手术")),
    Topic("贫血", ("血红蛋白偏低，经常头晕", "脸色苍白，容易累", "查出来缺铁性贫血", "孕期贫血"),
          ("考虑是缺铁性贫血", "贫血需要先查清原因"),
          ("多吃瘦肉、动物肝脏等含铁丰富的食物", "在医生指导下补充铁剂", "查一下有没有慢性失血", "一个月后复查血常规")),
    Topic("甲状腺结节", ("B超发现甲状腺结节", "甲状腺结节三类要手术吗", "脖子上摸到一个小包块", "甲状腺结节一厘米"),
          ("甲状腺结节大多数是良性的", "需要结合B超分级判断"),
          ("查甲状腺功能", "按医生要求定期复查B超", "结节分级高时可以做穿刺", "不必过度焦虑")),
    Topic("荨麻疹", ("身上突然起了一片片风团", "皮肤划一下就起红印", "吃海鲜后全身起疙瘩", "荨麻疹反复发作"),
          ("考虑是荨麻疹", "急性荨麻疹常与食物、药物或感染有关"),
          ("避免可疑的过敏食物", "可以服用抗过敏药", "出现呼吸困难立即就医", "反复发作到皮肤科查找原因")),
    Topic("牙痛", ("牙疼得睡不着", "吃冷的东西牙酸疼", "智齿那里肿了", "牙龈出血"),
          ("考虑是龋齿引起的牙髓炎", "智齿冠周炎也很常见"),
          ("保持口腔卫生", "尽快到口腔科就诊", "疼痛明显可以临时服用止痛药", "定期洗牙")),
    Topic("结膜炎", ("眼睛红，分泌物多", "眼睛痒还流泪", "早上起来眼屎很多", "眼睛里有异物感"),
          ("考虑是结膜炎", "眼痒流泪常见于过敏性结膜炎"),
          ("不要用手揉眼睛", "毛巾单独使用", "在医生指导下用眼药水", "视力下降要及时到眼科检查")),
    Topic("膝关节痛", ("上下楼梯膝盖疼", "膝盖肿了，弯曲困难", "跑步以后膝盖疼", "蹲下起来膝盖响还疼"),
          ("考虑是膝关节退行性改变", "运动后疼痛要考虑半月板或韧带损伤"),
          ("减少爬山、爬楼梯", "控制体重，减轻膝关节负担", "可以拍膝关节片子", "急性损伤先冰敷休息")),
    Topic("焦虑", ("总是心慌，担心出事", "紧张的时候手抖出汗", "最近老是莫名其妙地烦躁", "心里总是不踏实"),
          ("考虑存在焦虑情绪", "心慌也需要排除甲亢和心脏问题"),
          ("规律作息，适当运动", "可以做心电图和甲状腺功能检查", "学习放松训练", "症状明显时到心理科就诊")),
)

WHO = ("我", "我", "我妈妈", "我爸", "我老公", "我老婆", "我家孩子", "我朋友")
AGES = ("25岁", "32岁", "45岁", "58岁", "67岁", "6岁", "1岁半")
DURATIONS = ("", "，已经三天了", "，有一个多月了", "，断断续续半年了", "，今天早上开始的")
ENDINGS = ("怎么办？", "是怎么回事？", "需要吃什么药?", "严重吗？", "该挂什么科？", "要注意什么？？", "怎么回事啊!", "能自己好吗")
OPENERS = ("你好，根据你的描述，", "你好，从你描述的情况看，", "你好，结合你说的症状，")
CLOSINGS = ("祝早日康复。", "如有不适，及时到正规医院就诊。", "希望我的回答对你有帮助。")

# Material for the few very long, encyclopedia-style answers.
FOODS = ("小米粥", "燕麦", "鸡蛋", "豆浆", "全麦面包", "青菜", "西兰花", "冬瓜汤", "清蒸鱼", "鸡胸肉", "豆腐", "番茄", "苹果", "香蕉", "糙米饭", "山药")
LIFESTYLE = (
    "作息方面，每天尽量在晚上十一点之前入睡，保证七到八个小时的睡眠，午休时间不宜超过半小时。",
    "运动方面，可以选择快走、游泳、骑自行车等有氧运动，每次三十分钟左右，每周不少于五次，运动量循序渐进。",
    "情绪方面，长期紧张和焦虑会加重很多慢性病的症状，可以通过听音乐、散步、和家人朋友交流来放松。",
    "用药方面，任何药物都应在医生指导下使用，不要自行加量、减量或者停药，也不要轻信偏方。",
    "复查方面，建议把每次检查的结果和自己的症状记录下来，复诊时带给医生看，方便判断治疗效果。",
    "饮食方面，三餐定时定量，细嚼慢咽，晚餐不宜过饱，少吃腌制、烟熏和油炸食品，多吃新鲜蔬菜。",
)


def make_question(rng: random.Random, topic: Topic, templated: bool) -> str:
    """A patient's question about one topic, sometimes in the consultation-form template."""
    body = f"{rng.choice(WHO)}{rng.choice(topic.symptoms)}{rng.choice(DURATIONS)}，{rng.choice(ENDINGS)}"
    if templated:
        sex = rng.choice(("男", "女"))
        return f"患者性别:{sex}患者年龄:{rng.choice(AGES)}问题描述:{body}"
    return body


def make_answer(rng: random.Random, topic: Topic) -> str:
    """A short answer in the doctor's style: greeting and analysis, two or three pieces of advice, closing."""
    advice = rng.sample(topic.advice, rng.choice((2, 3)))
    punct = "，" if rng.random() > 0.15 else ","  # half-width commas occur in the real set too
    return f"{rng.choice(OPENERS)}{rng.choice(topic.analysis)}。建议{punct.join(advice)}。{rng.choice(CLOSINGS)}"


def make_long_answer(rng: random.Random, topic: Topic, weeks: int) -> str:
    """An encyclopedia-style answer of thousands of characters: causes, advice, a meal plan of `weeks` weeks."""
    parts = [f"{OPENERS[0]}{topic.analysis[0]}。下面分几个方面详细说明。", "一、可能的原因：" + "；".join(topic.analysis) + "。"]
    parts.append("二、处理建议：" + "".join(f"{i}. {a}。" for i, a in enumerate(topic.advice, start=1)))
    parts.append("三、生活调理：" + "".join(LIFESTYLE))
    plan = []
    for day in range(1, 7 * weeks + 1):
        meals = [("、".join(rng.sample(FOODS, 2))) for _ in range(3)]
        plan.append(f"第{day}天：早餐{meals[0]}，午餐{meals[1]}，晚餐{meals[2]}。")
    parts.append(f"四、{weeks}周饮食安排（仅供参考，按自己的口味替换同类食物）：" + "".join(plan))
    parts.append("五、注意事项：" + "".join(rng.sample(LIFESTYLE, 3)) + "如果症状加重，及时到医院就诊。")
    parts.append(rng.choice(CLOSINGS))
    return "".join(parts)


def generate(seed: int = SEED) -> list[dict[str, str]]:
    """All fixture rows in file order (deterministic for a given seed)."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < N_REGULAR:
        topic = rng.choice(TOPICS)
        q = make_question(rng, topic, templated=rng.random() < 0.12)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"questions": q, "answers": make_answer(rng, topic)})
    for topic, weeks in zip(rng.sample(TOPICS, 7), (4, 8, 12, 16, 22, 30, 40)):  # a few very long answers
        rows.append({"questions": make_question(rng, topic, templated=False) + "能详细说说吗？", "answers": make_long_answer(rng, topic, weeks)})
    for _ in range(5):  # empty consultation forms: the question carries no content
        rows.append({"questions": EMPTY_TEMPLATE, "answers": make_answer(rng, rng.choice(TOPICS))})
    for sex, age in (("女", "23岁"), ("男", "45岁")):  # forms with sex and age filled in, but no question
        rows.append({"questions": f"患者性别:{sex}患者年龄:{age}问题描述:", "answers": make_answer(rng, rng.choice(TOPICS))})
    rows.append({"questions": "   ", "answers": make_answer(rng, rng.choice(TOPICS))})  # whitespace-only question
    rows.append({"questions": make_question(rng, TOPICS[0], False) + "谢谢医生", "answers": ""})  # empty answer
    for i in rng.sample(range(N_REGULAR), 12):  # exact duplicates (the same post crawled twice)
        rows.append(dict(rows[i]))
    for i in rng.sample(range(N_REGULAR), 4):  # the same question answered by another doctor
        topic = next(t for t in TOPICS if any(s in rows[i]["questions"] for s in t.symptoms))
        rows.append({"questions": rows[i]["questions"], "answers": make_answer(rng, topic)})
    for i in rng.sample(range(len(rows)), 15):  # stray whitespace around questions and answers
        pad = rng.choice((" ", "\n", "  ", "\t", "\u3000"))
        key = rng.choice(("questions", "answers"))
        rows[i] = {**rows[i], key: pad + rows[i][key] + rng.choice(("", " ", "\n"))}
    rng.shuffle(rows)
    return rows


def write(path: Path = OUT, seed: int = SEED) -> int:
    """Write the fixture as UTF-8 JSONL (atomically); return the number of rows."""
    rows = generate(seed)
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(rows)


if __name__ == "__main__":
    print(f"wrote {write()} rows to {OUT}")
