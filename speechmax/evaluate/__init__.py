"""speechmax.evaluate"""
