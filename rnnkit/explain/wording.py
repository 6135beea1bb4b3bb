"""The wording of :func:`~rnnkit.explain.explain`, in each language it speaks.

One dictionary per language (``en``, and ``zh``: Traditional Chinese) with the
same keys: headings, the meaning of each argument, axis and tensor, the
equations' legends, notes and problems. A cell kind without its own
``gates.<cell>`` legend is explained without one.
"""

from __future__ import annotations

from typing import Any

TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "title.shape": "{layer} with an input of shape {shape}",
        "title.symbolic": "{layer}; no input shape given, so {symbols} stay symbolic",
        "heading.arguments": "Arguments",
        "heading.recurrence": "Recurrence, at every step t of every layer",
        "heading.cell": "One step",
        "heading.shapes": "Shapes",
        "heading.expected": "Shapes the layer expects",
        "heading.axes": "Axes",
        "heading.parameters": "Parameters",
        "heading.notes": "Notes",
        "heading.problems": "Problems",
        "header.shapes": ("tensor", "shape", "axes", "meaning"),
        "header.parameters": ("name", "shape", "numel", "holds"),
        "total": "total",
        "and": " and ",
        "any": "any",
        "where.layer": ", layer {k}",
        "where.reverse": ", reverse",
        "projection": "W_hr, the projection",
        "layer_norm_parameters": {
            "ln_ih_weight": "the gain of LN_ih", "ln_hh_weight": "the gain of LN_hh",
            "ln_c_weight": "the gain of LN_c", "ln_c_bias": "the shift of LN_c",
        },
        "legend.layer_norm": "LN_ih, LN_hh: layer norm over all G*H features of the product "
                             "together (one mean, one biased variance, eps 1e-5, a gain, no "
                             "shift); LN_c: layer norm of c_t with a gain and a shift",
        "note.layer_norm": "layer_norm=True: rnnkit's layer-normalised cell (Ba, Kiros & Hinton "
                           "2016); torch.nn has no such option, so to_torch() refuses this layer. "
                           "The ln_* gains start at 1 and the shift at 0",
        "note.recurrent_dropout": "recurrent_dropout={p}: in training mode only, each sequence's "
                                  "h is multiplied by one mask m (entries 0 or 1/(1-{p})) where "
                                  "it enters W_hh, at every step of the call; output and h_n are "
                                  "not masked; model.eval() turns it off",
        "note.zoneout": "zoneout={p}: in training mode each unit of h keeps its previous value "
                        "with probability {p} at every step (an LSTM's c updates as usual); in "
                        "eval mode h_t = {p} h_(t-1) + (1 - {p}) h~_t",
        "problem.probability": "{name} is {value!r}, but it must be a probability between 0 and 1",
        "meaning": {
            "input_size": "features in each input step x_t: the last axis of the input",
            "hidden_size": "features in the hidden state h_t (and in an LSTM's cell state c_t)",
            "num_layers": "recurrent layers stacked on each other; layer k+1 reads "
                          "layer k's h_t as its input (default 1)",
            "nonlinearity": "the activation of the recurrence: 'tanh' (default) or 'relu'",
            "bias": "whether to add the biases b_ih and b_hh (default True)",
            "batch_first": "True lays input and output out as (batch, seq, feature) instead of "
                           "(seq, batch, feature); the states keep their layout (default False)",
            "dropout": "probability of zeroing each output element of every layer but the last, "
                       "in training mode only (default 0)",
            "bidirectional": "True also runs every layer from the last step to the first and "
                             "joins both directions' features (default False)",
            "proj_size": "if > 0, h_t is projected down to proj_size features by weight_hr; "
                         "c_t keeps hidden_size (default 0: no projection)",
            "lengths": "forward keyword: each padded sequence's valid length, one per sequence, "
                       "each in 1..L; the result is that of packing the batch, without the copies",
            "return_states": "forward keyword: True also returns every step's state of every "
                             "layer and direction, (D*num_layers, L, N, features) per state part",
            "layer_norm": "rnnkit keyword: True normalises the input and recurrent products "
                          "(and an LSTM's cell state) at every step, with learnable gains "
                          "(default False)",
            "recurrent_dropout": "rnnkit keyword: probability of zeroing each unit of h where it "
                                 "enters W_hh, one mask per sequence for the whole sequence, in "
                                 "training mode only (default 0)",
            "zoneout": "rnnkit keyword: probability that each unit of h keeps its previous value "
                       "at each step in training mode; in eval mode h mixes in that proportion "
                       "(default 0)",
        },
        "axis": {
            "L": "seq: the sequence length, or number of time steps",
            "N": "batch: how many sequences are processed side by side",
            "H_in": "feature: input features, = input_size",
            "H_out": "hidden features, = hidden_size",
            "H_out.proj": "hidden features after the projection, = proj_size",
            "H_cell": "cell-state features, = hidden_size",
            "D*num_layers": "one state per layer and direction (D = 2 if bidirectional, else 1)",
            "D*H_out": "output features: the last layer's h_t, both directions side by side if D = 2",
        },
        "tensor.layer": {
            "input": "the input sequence",
            "h_0": "initial hidden state of every layer and direction; zeros if omitted",
            "c_0": "initial cell state of every layer and direction; zeros if omitted",
            "output": "the last layer's h_t at every step",
            "h_n": "final hidden state of every layer and direction",
            "c_n": "final cell state of every layer and direction",
            "lengths": "each sequence's valid length, 1..L (the forward's lengths=)",
            "states": "h_t of every layer and direction after every step, zeros past each "
                      "length (return_states=True)",
            "h_states": "h_t of every layer and direction after every step, zeros past each "
                        "length (return_states=True)",
            "c_states": "c_t of every layer and direction after every step, zeros past each "
                        "length (return_states=True)",
        },
        "tensor.cell": {
            "input": "the input x_t of one step",
            "h_0": "hidden state h_(t-1) before the step; zeros if omitted",
            "c_0": "cell state c_(t-1) before the step; zeros if omitted",
            "h_1": "hidden state h_t after the step (returned)",
            "c_1": "cell state c_t after the step (returned)",
        },
        "legend.layer": "x_t: the input at step t (in layer k > 0, the output of layer k-1); "
                        "h_(t-1): the previous hidden state, h_0 at t = 0",
        "legend.cell": "x_t: the input; h_(t-1): the state passed in; h_t: the state returned",
        "gates.lstm": "i, f, g, o: input gate, forget gate, cell candidate, output gate; "
                      "c_t: cell state; σ: sigmoid; ⊙: element-wise product",
        "gates.gru": "r, z, n: reset gate, update gate, new candidate state; "
                     "σ: sigmoid; ⊙: element-wise product",
        "note.cell": "a cell computes a single step: loop over time yourself and pass the "
                     "returned state back in",
        "note.state_tuple": "{layer} takes its state as a tuple ({state_in}) and returns ({state_out})",
        "note.proj": "proj_size={p}: h_t is projected from {h} to {p} features by weight_hr, so "
                     "h_0, h_n and output carry {p} features while c_0 and c_n keep {h}",
        "note.dropout": "dropout={p}: in training mode only, each output element of every layer "
                        "but the last ({n} of {num_layers}) is zeroed with probability {p} before "
                        "the next layer reads it; model.eval() turns it off",
        "note.dropout_unused": "dropout={p} has no effect with num_layers=1: dropout is only "
                               "applied between stacked layers (torch warns about this too)",
        "note.bidirectional": "bidirectional=True: D = 2. Every layer runs forward and backward; "
                              "output joins both directions ({h} + {h} = {d} features, forward "
                              "first); the final states come layer by layer, forward before "
                              "reverse; layers after the first read all {d} features",
        "note.batch_first": "batch_first=True puts N first in input and output only; {states} "
                            "stay (D*num_layers, N, ...)",
        "note.unbatched": "unbatched input: no shape has the N axis",
        "note.lengths": "lengths=: steps past each sequence's length are not computed: output is "
                        "zero there, {final} is taken at each sequence's own last step and the "
                        "reverse direction starts there; the same result as "
                        "pack_padded_sequence(..., enforce_sorted=False), without copying the batch",
        "note.return_states": "return_states=True: the forward returns (output, {final}, {states}); "
                              "entry [k*D + d, t] is layer k's direction d state after it has read "
                              "step t (the reverse direction reads L-1 ... t); the last layer's "
                              "entries are output's halves, and h_n[k*D + d] is the entry at each "
                              "sequence's last step (step 0 in reverse)",
        "reason.cell": "a cell computes one step of one layer in one direction",
        "reason.nonlinearity": "only {owners} choose their activation",
        "reason.proj_size": "only {owners} projects its hidden state",
        "problem.not_argument": "{name}={value!r} is not an argument of {layer}: {reason}",
        "problem.int": "{name} must be a Python int, got {value!r}",
        "problem.positive": "{name} is {value}, but it must be at least 1",
        "problem.bool": "{name} must be True or False, got {value!r}",
        "problem.dropout": "dropout is {value!r}, but it must be a probability between 0 and 1",
        "problem.nonlinearity": "nonlinearity is {value!r}, but it must be 'tanh' or 'relu'",
        "problem.proj_negative": "proj_size is {value}, but it must be 0 (no projection) or positive",
        "problem.proj_large": "proj_size is {value}, but it must be smaller than hidden_size = "
                              "{hidden}: the projection makes h_t smaller",
        "problem.shape_type": "input_shape must be a sequence of integers such as (3, 2, 5), "
                              "got {value!r}",
        "problem.ndim": "input_shape {shape} has {n} axes, but {layer} takes {batched} axes "
                        "{batched_axes}, or {unbatched} {unbatched_axes} without a batch",
        "problem.negative": "input_shape {shape} has a negative size; every size must be 0 or more",
        "problem.features": "input_shape[-1] is {got} but input_size is {want}: the last axis "
                            "holds the features of each step",
        "problem.empty": "the sequence length L = input_shape[{index}] is 0: a sequence needs "
                         "at least one step",
        "problem.lengths_type": "lengths must be True or a sequence of integers such as [3, 1], "
                                "got {value!r}",
        "problem.lengths_unbatched": "lengths needs a batched input, but input_shape {shape} is "
                                     "unbatched: a single sequence has all its steps",
        "problem.lengths_count": "lengths gives {got} lengths, but the batch holds N = {n} "
                                 "sequences: give one length per sequence",
        "problem.lengths_range": "lengths[{index}] is {value}, but each length must be between 1 "
                                 "and L = {steps}",
        "problem.lengths_positive": "lengths[{index}] is {value}, but each length must be at least 1",
    },
    "zh": {
        "title.shape": "{layer}，輸入形狀 {shape}",
        "title.symbolic": "{layer}；未提供輸入形狀，{symbols} 以符號表示",
        "heading.arguments": "引數",
        "heading.recurrence": "遞迴式（每一層的每個時間步 t）",
        "heading.cell": "單步計算",
        "heading.shapes": "形狀",
        "heading.expected": "此層預期的形狀",
        "heading.axes": "維度符號",
        "heading.parameters": "可訓練參數",
        "heading.notes": "附註",
        "heading.problems": "問題",
        "header.shapes": ("張量", "形狀", "維度", "說明"),
        "header.parameters": ("名稱", "形狀", "元素數", "內容"),
        "total": "參數總數",
        "and": " 與 ",
        "any": "任意",
        "where.layer": "，第 {k} 層",
        "where.reverse": "，反向",
        "projection": "W_hr，投影矩陣",
        "layer_norm_parameters": {
            "ln_ih_weight": "LN_ih 的增益", "ln_hh_weight": "LN_hh 的增益",
            "ln_c_weight": "LN_c 的增益", "ln_c_bias": "LN_c 的平移",
        },
        "legend.layer_norm": "LN_ih、LN_hh：對乘積的全部 G*H 個特徵一起做層正規化（一個平均值、"
                             "一個有偏變異數，eps 1e-5，有增益、無平移）；LN_c：對 c_t 做層正規化，"
                             "有增益與平移",
        "note.layer_norm": "layer_norm=True：rnnkit 的層正規化單元（Ba、Kiros 與 Hinton 2016）；"
                           "torch.nn 沒有這個選項，所以 to_torch() 不接受這一層。ln_* 增益從 1 "
                           "開始，平移從 0 開始",
        "note.recurrent_dropout": "recurrent_dropout={p}：只在訓練模式下，每條序列的 h 在進入 W_hh "
                                  "之處乘上同一個遮罩 m（元素為 0 或 1/(1-{p})），整次呼叫的每個"
                                  "時間步都用它；output 與 h_n 不受遮罩；model.eval() 會關閉它",
        "note.zoneout": "zoneout={p}：訓練模式下，h 的每個單元在每個時間步以機率 {p} 保留前一步的值"
                        "（LSTM 的 c 照常更新）；評估模式下 h_t = {p} h_(t-1) + (1 - {p}) h~_t",
        "problem.probability": "{name} 是 {value!r}，但必須是 0 到 1 之間的機率",
        "meaning": {
            "input_size": "輸入 x_t 每個時間步的特徵維度，即輸入的最後一個維度",
            "hidden_size": "隱藏狀態 h_t 的特徵數（LSTM 的細胞狀態 c_t 也是這個大小）",
            "num_layers": "堆疊的循環層數，預設 1；第 k+1 層以第 k 層的 h_t 作為輸入",
            "nonlinearity": "遞迴使用的非線性函數：'tanh'（預設）或 'relu'",
            "bias": "是否加上偏置項 b_ih 與 b_hh，預設 True",
            "batch_first": "True 時輸入與輸出的維度順序為 (batch, seq, feature)，而非預設的 "
                           "(seq, batch, feature)；狀態張量的順序不變",
            "dropout": "0 到 1 之間的機率：除最後一層外，每層輸出的每個元素以此機率歸零，"
                       "僅在訓練模式生效，預設 0",
            "bidirectional": "True 時為雙向：每一層另從最後一個時間步往回跑一次，"
                             "並串接兩個方向的特徵，預設 False",
            "proj_size": "大於 0 時，h_t 經 weight_hr 投影為 proj_size 個特徵，c_t 仍為 "
                         "hidden_size 個；預設 0（不投影）",
            "lengths": "forward 的關鍵字引數：補齊後每條序列的有效長度，每條序列一個，介於 1 到 L；"
                       "結果與打包（pack）整批相同，但不複製資料",
            "return_states": "forward 的關鍵字引數：True 時另外回傳每一層、每個方向在每個時間步的"
                             "狀態，每個狀態部分為 (D*num_layers, L, N, 特徵數)",
            "layer_norm": "rnnkit 的關鍵字引數：True 時在每個時間步對輸入乘積與遞迴乘積（以及 LSTM "
                          "的細胞狀態）做層正規化，增益可學習（預設 False）",
            "recurrent_dropout": "rnnkit 的關鍵字引數：h 進入 W_hh 之處每個單元被歸零的機率，每條"
                                 "序列整段共用一個遮罩，只在訓練模式下（預設 0）",
            "zoneout": "rnnkit 的關鍵字引數：訓練模式下 h 的每個單元在每個時間步保留前一步值的機率；"
                       "評估模式下 h 依此比例混合（預設 0）",
        },
        "axis": {
            "L": "seq：序列長度，即時間步數",
            "N": "batch：批量大小，即同時處理的序列數",
            "H_in": "feature：輸入特徵數，= input_size",
            "H_out": "隱藏特徵數，= hidden_size",
            "H_out.proj": "投影後的隱藏特徵數，= proj_size",
            "H_cell": "細胞狀態的特徵數，= hidden_size",
            "D*num_layers": "每一層的每個方向各一個狀態（雙向時 D = 2，否則 D = 1）",
            "D*H_out": "輸出特徵數：最後一層的 h_t，D = 2 時兩個方向並排串接",
        },
        "tensor.layer": {
            "input": "輸入序列",
            "h_0": "每一層、每個方向的初始隱藏狀態；省略時為全零",
            "c_0": "每一層、每個方向的初始細胞狀態；省略時為全零",
            "output": "最後一層在每個時間步的 h_t",
            "h_n": "每一層、每個方向最後的隱藏狀態",
            "c_n": "每一層、每個方向最後的細胞狀態",
            "lengths": "每條序列的有效長度，介於 1 到 L（forward 的 lengths=）",
            "states": "每一層、每個方向在每個時間步之後的 h_t，超出長度處為零（return_states=True）",
            "h_states": "每一層、每個方向在每個時間步之後的 h_t，超出長度處為零（return_states=True）",
            "c_states": "每一層、每個方向在每個時間步之後的 c_t，超出長度處為零（return_states=True）",
        },
        "tensor.cell": {
            "input": "單一時間步的輸入 x_t",
            "h_0": "這一步之前的隱藏狀態 h_(t-1)；省略時為全零",
            "c_0": "這一步之前的細胞狀態 c_(t-1)；省略時為全零",
            "h_1": "這一步之後的隱藏狀態 h_t（回傳值）",
            "c_1": "這一步之後的細胞狀態 c_t（回傳值）",
        },
        "legend.layer": "x_t：時間步 t 的輸入（第 k > 0 層則是第 k-1 層的輸出）；"
                        "h_(t-1)：上一步的隱藏狀態，t = 0 時為 h_0",
        "legend.cell": "x_t：輸入；h_(t-1)：傳入的狀態；h_t：回傳的狀態",
        "gates.lstm": "i、f、g、o：輸入門、遺忘門、候選細胞狀態、輸出門；c_t：細胞狀態；"
                      "σ：sigmoid；⊙：逐元素相乘",
        "gates.gru": "r、z、n：重置門、更新門、新的候選狀態；σ：sigmoid；⊙：逐元素相乘",
        "note.cell": "cell 只計算一個時間步：需自行對時間做迴圈，並把回傳的狀態傳入下一步",
        "note.state_tuple": "{layer} 的狀態以 tuple 傳入 ({state_in})，並回傳 ({state_out})",
        "note.proj": "proj_size={p}：h_t 經 weight_hr 從 {h} 個特徵投影為 {p} 個，因此 h_0、"
                     "h_n 與 output 為 {p} 個特徵，c_0 與 c_n 仍為 {h} 個",
        "note.dropout": "dropout={p}：僅在訓練模式下，除最後一層外（{num_layers} 層中的 {n} 層）"
                        "每層輸出的每個元素以機率 {p} 歸零後再交給下一層；model.eval() 後不套用",
        "note.dropout_unused": "num_layers=1 時 dropout={p} 沒有作用：dropout 只套用在堆疊的層"
                               "與層之間（torch 也會對此發出警告）",
        "note.bidirectional": "bidirectional=True：D = 2。每一層都正向、反向各跑一次；output "
                              "串接兩個方向（{h} + {h} = {d} 個特徵，正向在前）；最後的狀態依層"
                              "排列，每層正向在前、反向在後；第一層之後的各層讀入全部 {d} 個特徵",
        "note.batch_first": "batch_first=True 只讓 input 與 output 的 N 排在最前面；{states} "
                            "仍為 (D*num_layers, N, ...)",
        "note.unbatched": "無批量的輸入：所有形狀都沒有 N 這個維度",
        "note.lengths": "lengths=：超出每條序列長度的時間步不會計算：output 在那裡為零，{final} "
                        "取自每條序列自己的最後一步，反向也從那一步開始；結果與 "
                        "pack_padded_sequence(..., enforce_sorted=False) 相同，但不複製整批資料",
        "note.return_states": "return_states=True：forward 回傳 (output, {final}, {states})；"
                              "第 [k*D + d, t] 項是第 k 層、第 d 個方向讀完時間步 t 之後的狀態"
                              "（反向依序讀 L-1 ... t）；最後一層的各項即 output 的兩半，"
                              "h_n[k*D + d] 是每條序列最後一步的那一項（反向為第 0 步）",
        "reason.cell": "cell 只計算單一層、單一方向的一個時間步",
        "reason.nonlinearity": "只有 {owners} 可以選擇非線性函數",
        "reason.proj_size": "只有 {owners} 會投影隱藏狀態",
        "problem.not_argument": "{name}={value!r} 不是 {layer} 的引數：{reason}",
        "problem.int": "{name} 必須是整數，卻收到 {value!r}",
        "problem.positive": "{name} 是 {value}，但必須至少為 1",
        "problem.bool": "{name} 必須是 True 或 False，卻收到 {value!r}",
        "problem.dropout": "dropout 是 {value!r}，但必須是 0 到 1 之間的機率",
        "problem.nonlinearity": "nonlinearity 是 {value!r}，但只能是 'tanh' 或 'relu'",
        "problem.proj_negative": "proj_size 是 {value}，但必須為 0（不投影）或正整數",
        "problem.proj_large": "proj_size 是 {value}，但必須小於 hidden_size = {hidden}："
                              "投影是把 h_t 變小",
        "problem.shape_type": "input_shape 必須是整數序列，例如 (3, 2, 5)，卻收到 {value!r}",
        "problem.ndim": "input_shape {shape} 有 {n} 個維度，但 {layer} 的輸入須為 {batched} 維 "
                        "{batched_axes}，或無批量時的 {unbatched} 維 {unbatched_axes}",
        "problem.negative": "input_shape {shape} 含有負的大小；每個維度都必須 ≥ 0",
        "problem.features": "input_shape[-1] 是 {got}，但 input_size 是 {want}：最後一個維度是"
                            "每個時間步的特徵數，兩者必須相等",
        "problem.empty": "序列長度 L = input_shape[{index}] 為 0：序列至少需要一個時間步",
        "problem.lengths_type": "lengths 必須是 True 或整數序列，例如 [3, 1]，卻收到 {value!r}",
        "problem.lengths_unbatched": "lengths 需要有批量的輸入，但 input_shape {shape} 沒有批量："
                                     "單一序列的每個時間步都有效",
        "problem.lengths_count": "lengths 給了 {got} 個長度，但這一批有 N = {n} 條序列："
                                 "每條序列需要一個長度",
        "problem.lengths_range": "lengths[{index}] 是 {value}，但每個長度必須介於 1 與 L = {steps} 之間",
        "problem.lengths_positive": "lengths[{index}] 是 {value}，但每個長度必須至少為 1",
    },
}
